"""Small helpers shared by tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import spacy
from spacy.language import Language


def tiny_llama_config(
    path: Path,
    *,
    template: str = "{{ text }}",
    chat: bool = False,
    generation: Optional[Dict[str, Any]] = None,
    **component: Any,
) -> Dict[str, Any]:
    return {
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
        "task": {"@llama_tasks": "spacy-llama.Completion.v1", "template": template, "chat": chat},
        "generation": {"max_new_tokens": 8, **(generation or {})},
        **component,
    }


def tiny_nlp(path: Path, **kwargs: Any) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=tiny_llama_config(path, **kwargs))
    return nlp


TINY_PIPELINE_CONFIG = """
[nlp]
lang = "en"
pipeline = ["llama"]
batch_size = {batch_size}

[components]

[components.llama]
factory = "llama"
batch_size = {batch_size}

[components.llama.model]
@llama_models = "spacy-llama.HF.v1"
path = {model}
device = "cpu"
dtype = "float32"

[components.llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = "{{{{ text }}}}"
chat = false
on_overflow = "{on_overflow}"

[components.llama.generation]
max_new_tokens = {max_new_tokens}
temperature = 0.0
"""


def write_config(
    folder: Path,
    model: Path,
    *,
    name: str = "tiny.cfg",
    max_new_tokens: int = 4,
    batch_size: int = 8,
    on_overflow: str = "truncate",
) -> Path:
    """A blank "en" pipeline + llama (greedy completion of the text) on the tiny model, as
    a config file for ``annotate`` and the other commands."""
    path = folder / name
    path.write_text(
        TINY_PIPELINE_CONFIG.format(
            model=json.dumps(str(model)),
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            on_overflow=on_overflow,
        ),
        encoding="utf-8",
    )
    return path
