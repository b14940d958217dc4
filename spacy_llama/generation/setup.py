"""One way to set up generation on a model, for the ``llama`` component (``pipeline.py``)
and spacy-llm's model (``llm_compat/backend.py``): the engine (its backend chosen once,
when it is built) with the prompt formatter on the same model. Their ``generation`` blocks
are read by one function too, :func:`.config.generation_config`."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ..models.base import LanguageModel
from .config import GenerationConfig
from .engine import Engine
from .formatter import ModelPromptFormatter


def build_engine(
    model: LanguageModel,
    generation: GenerationConfig,
    *,
    batch_size: int,
    cache: Optional[Any] = None,
    prefix_cache: bool = True,
    prompt_lookup: bool = True,
    quantize: Optional[str] = None,
) -> Tuple[Engine, ModelPromptFormatter]:
    """The engine on ``model`` and the formatter that renders and counts its prompts."""
    engine = Engine(
        model,
        generation,
        batch_size=batch_size,
        cache=cache,
        prefix_cache=prefix_cache,
        prompt_lookup=prompt_lookup,
        quantize=quantize,
    )
    return engine, ModelPromptFormatter(model, max_new_tokens=generation.max_new_tokens)
