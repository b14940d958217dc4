"""Docs per batch of a run (batch/batch_size.py): the smallest of spaCy's and the llama
components' batch sizes, the same for a filled and an unfilled config, unless asked."""

from __future__ import annotations

from confection import Config
from spacy.language import DEFAULT_CONFIG as SPACY_DEFAULTS

from spacy_llama.batch.batch_size import run_batch_size
from spacy_llama.pipeline import DEFAULT_CONFIG


def config(text: str) -> Config:
    return Config().from_str(text)


TWO_LLAMAS = """
[nlp]
batch_size = 64
[components]
[components.a]
factory = "llama"
batch_size = 16
[components.b]
factory = "llama"
batch_size = 24
[components.ner]
factory = "ner"
"""


def test_the_smallest_batch_wins_and_a_request_overrides_it() -> None:
    assert run_batch_size(config(TWO_LLAMAS)) == 16
    assert run_batch_size(config(TWO_LLAMAS), 5) == 5
    assert run_batch_size(config(TWO_LLAMAS.replace("batch_size = 64", "batch_size = 4"))) == 4


def test_missing_settings_take_the_defaults() -> None:
    unfilled = config('[nlp]\n[components]\n[components.a]\nfactory = "llama"\n')
    spacy_size = SPACY_DEFAULTS["nlp"]["batch_size"]
    assert run_batch_size(unfilled) == min(spacy_size, DEFAULT_CONFIG["batch_size"]) == 32
    assert run_batch_size(config("[nlp]\n[components]\n")) == spacy_size
