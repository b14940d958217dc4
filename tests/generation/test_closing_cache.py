"""The closing search is cached per skeleton (the output less its value strings'
characters): rows at the same place of the structure share one search, a cached closing is
used only where it completes, and rollback restores the skeleton."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spacy_llama.generation import closing
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.types import Constraint

SCHEMA = {
    "type": "object",
    "properties": {
        "section": {"enum": ["Books", "Electronics", "Toys"]},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["section", "keywords"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


def start(model: Any) -> Any:
    engine = Engine(model, GenerationConfig(max_new_tokens=64))
    compiled = engine.grammar(Constraint("json_schema", json.dumps(SCHEMA)))
    compiled.closings.clear()
    return compiled.start()


def feed(model: Any, row: Any, text: str) -> int:
    ids = model.encode(text, add_special_tokens=False)
    for t in ids:
        assert row.accept(t)
    return len(ids)


def test_the_skeleton_keeps_keys_and_drops_value_strings(model):
    row = start(model)
    feed(model, row, '{"section": "Toys", "keywords": ["a b')
    assert row.skeleton == b'{"section": "", "keywords": ["'
    n = feed(model, row, 'c", "de')
    assert row.skeleton == b'{"section": "", "keywords": ["", "'
    row.rollback(n)
    assert row.skeleton == b'{"section": "", "keywords": ["'


def test_rows_at_the_same_place_share_one_search(model, monkeypatch):
    searches = []
    search = closing._search_closing
    monkeypatch.setattr(closing, "_search_closing", lambda r: searches.append(1) or search(r))
    first, second = start(model), start(model)
    feed(model, first, '{"section": "Toys", "keywords": ["red')
    feed(model, second, '{"section": "Books", "keywords": ["a much longer keyword')
    path = closing.closing_tokens(first)
    assert path is not None and model.decode(path) == '"]}'
    assert closing.closing_tokens(second) == path and len(searches) == 1
    feed(model, second, " still")  # the same string goes on: the same closing
    assert closing.closing_tokens(second) == path and len(searches) == 1


def test_a_cached_closing_that_does_not_complete_here_is_not_used(model):
    row = start(model)
    feed(model, row, '{"section": "Toys", "keywords": ["x')
    key = row.skeleton
    row.closings[key] = model.encode("}", add_special_tokens=False)  # wrong for this row
    path = closing.closing_tokens(row)
    assert path is not None and model.decode(path) == '"]}'
    assert row.closings[key] == path  # the search's closing replaced it
