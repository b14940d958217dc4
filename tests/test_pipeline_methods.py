"""LlamaPipe's public methods that a corpus run uses (batch/ calls these instead of reaching
into the engine and the task), and the spaCy contract the component keeps in place of
subclassing TrainablePipe."""

from __future__ import annotations

from pathlib import Path

import spacy.ty
from spacy.language import Language

from spacy_llama.generation.sqlite_cache import SQLiteCache
from spacy_llama.pipeline import LlamaPipe

from .fixtures.helpers import tiny_nlp


def test_model_fingerprint_and_prompt_templates(tiny_hf: Path) -> None:
    nlp = tiny_nlp(tiny_hf, template="Say: {{ text }}")
    pipe = nlp.get_pipe("llama")
    assert pipe.model_fingerprint == pipe.model.fingerprint and pipe.model_fingerprint
    assert pipe.prompt_templates() == {"template": "Say: {{ text }}"}
    other = tiny_nlp(tiny_hf, template="Answer: {{ text }}").get_pipe("llama")
    assert other.prompt_templates() == {"template": "Answer: {{ text }}"}


def test_engine_stats_count_the_calls(tiny_hf: Path) -> None:
    nlp = tiny_nlp(tiny_hf)
    pipe = nlp.get_pipe("llama")
    assert pipe.engine_stats.model_calls == 0
    nlp("Paris is a city.")
    nlp("London is a city.")
    assert pipe.engine_stats.model_calls == 2 and pipe.engine_stats.generated_tokens >= 2


def test_use_run_cache_keeps_a_configured_cache_and_none_turns_caching_off(
    tiny_hf: Path, tmp_path: Path
) -> None:
    pipe = tiny_nlp(tiny_hf).get_pipe("llama")
    run_cache = SQLiteCache(tmp_path / "run.sqlite")
    pipe.use_run_cache(run_cache)
    assert pipe.engine.cache is run_cache
    own = SQLiteCache(tmp_path / "own.sqlite")
    pipe.engine.cache = own  # as a config's `cache` block gives it
    pipe.use_run_cache(run_cache)
    assert pipe.engine.cache is own
    pipe.use_run_cache(None)
    assert pipe.engine.cache is None


def test_llama_pipe_keeps_spacys_trainable_component_contract(tiny_hf: Path) -> None:
    """What spaCy's Language.update, initialize and use_params look for."""
    nlp: Language = tiny_nlp(tiny_hf)
    pipe = nlp.get_pipe("llama")
    assert isinstance(pipe, LlamaPipe)
    assert isinstance(pipe, spacy.ty.TrainableComponent)
    assert isinstance(pipe, spacy.ty.InitializableComponent)
    assert pipe.is_trainable is False  # no adapter block: nothing to train
    assert pipe.update([]) == {}
    with nlp.use_params({}):
        assert isinstance(nlp("Paris.")._.llama_completion, str)
