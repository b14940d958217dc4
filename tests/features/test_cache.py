"""Frozen features are computed once per span and reused (issue 26: 15 epochs ran the model
over every training doc 15 times); a trained adapter's are never cached."""

from __future__ import annotations

from typing import Any, List

import numpy
import pytest

from spacy_llama.errors import FeatureError
from spacy_llama.features import model as model_mod

from .builders import TEXTS, examples, listener_nlp, lora_overrides, train_steps
from .test_features import span_states


@pytest.fixture
def runs(monkeypatch) -> List[int]:
    """The number of rows each LLaMA run computed."""
    calls: List[int] = []
    real = model_mod.hidden_states

    def counting(base: Any, rows: Any, *args: Any) -> Any:
        calls.append(len(rows))
        return real(base, rows, *args)

    monkeypatch.setattr(model_mod, "hidden_states", counting)
    return calls


@pytest.mark.parametrize("layer", [-1, "mix"])
def test_cached_features_equal_computed_ones(tiny_hf, monkeypatch, layer, runs) -> None:
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.layer": layer})
    first = span_states(nlp, TEXTS)
    n_spans = sum(len(doc) for doc in first)
    assert sum(runs) == n_spans
    again = span_states(nlp, TEXTS[::-1])[::-1]  # another batch and order: all hits
    assert sum(runs) == n_spans
    cache = nlp.get_pipe("transformer").model.feature_cache
    assert cache.hits == n_spans and len(cache) == n_spans
    monkeypatch.setenv("SPACY_LLAMA_FEATURE_CACHE_MB", "0")
    fresh = span_states(nlp, TEXTS)  # the model again, no cache
    assert sum(runs) == 2 * n_spans
    for a, b, c in zip(first, again, fresh):
        for x, y, z in zip(a, b, c):
            assert numpy.array_equal(x, y) and numpy.array_equal(x, z)


def test_training_epochs_run_the_model_once_per_span(tiny_hf, runs) -> None:
    nlp = listener_nlp(tiny_hf)
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    runs.clear()  # initialize may look at the data
    losses = train_steps(nlp, egs, optimizer, steps=3)
    assert len(runs) == 1 and runs[0] > 0  # epoch 1 computes, epochs 2 and 3 reuse
    assert losses[-1]["textcat"] != losses[0]["textcat"]  # the listener still learns
    nlp.evaluate(egs)  # a dev evaluation of the same texts: no new run
    assert len(runs) == 1


def test_a_trained_adapter_is_never_cached(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides())
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    train_steps(nlp, egs, optimizer, steps=1)
    span_states(nlp, TEXTS)
    assert len(nlp.get_pipe("transformer").model.feature_cache) == 0


def test_budget_bounds_the_cache_and_bad_values_are_named(tiny_hf, monkeypatch) -> None:
    nlp = listener_nlp(tiny_hf)
    cache = nlp.get_pipe("transformer").model.feature_cache
    span_states(nlp, TEXTS)
    sizes = sorted(v.nbytes for v in cache._data.values())
    cache.clear()
    budget = sizes[-1] + sizes[-2]  # room for about two spans of the many
    monkeypatch.setenv("SPACY_LLAMA_FEATURE_CACHE_MB", str(budget / 2**20))
    span_states(nlp, TEXTS)
    assert 0 < cache.bytes <= budget and 0 < len(cache) < len(sizes)
    monkeypatch.setenv("SPACY_LLAMA_FEATURE_CACHE_MB", "lots")
    with pytest.raises(FeatureError, match="E835.*'lots'"):
        span_states(nlp, TEXTS)
