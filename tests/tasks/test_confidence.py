"""span._.llama_score: the probability of the answer tokens that named each span, against
hand-computed references (a table tokenizer, so every token's characters are known)."""

from __future__ import annotations

import math
from typing import List, Tuple

import pytest
from spacy.tokens import Span

from spacy_llama.generation.formatter import ModelPromptFormatter
from spacy_llama.tasks.confidence import json_objects, range_probability, token_ranges
from spacy_llama.types import GenerationResult

from .structured_helpers import answer_with, structured_nlp


def table_answer(pieces: List[Tuple[str, float]]) -> Tuple[GenerationResult, List[str]]:
    """A result whose token k is ``pieces[k]`` (text, logprob); ids are 1000 + k."""
    table = [p for p, _ in pieces]
    result = GenerationResult(
        text="".join(table),
        token_ids=[1000 + k for k in range(len(pieces))],
        logprobs=[lp for _, lp in pieces],
        finish_reason="stop",
    )
    return result, table


@pytest.fixture
def table_decode(monkeypatch):
    tables: List[List[str]] = []

    def decode(self, ids):
        return "".join(tables[-1][i - 1000] for i in ids)

    monkeypatch.setattr(ModelPromptFormatter, "decode", decode)
    return tables


def test_token_ranges_and_range_probability_by_hand() -> None:
    table = ["ORG", ":", " Acme", "\n", "CITY", ":", " Oslo"]
    ranges = token_ranges(lambda ids: "".join(table[i] for i in ids), list(range(len(table))))
    assert ranges == [(0, 3), (3, 4), (4, 9), (9, 10), (10, 14), (14, 15), (15, 20)]
    lps = [-0.1, -0.2, -0.3, -5.0, -1.0, -0.5, -2.0]
    assert range_probability(ranges, lps, [(0, 9)]) == pytest.approx(math.exp(-0.6))
    assert range_probability(ranges, lps, [(10, 20)]) == pytest.approx(math.exp(-3.5))
    assert range_probability(ranges, lps, [(9, 9)]) is None  # an empty range: no token
    # an answer closed at its budget: its closing tokens were not chosen by the model (None
    # in a result, NaN inside the engine); a span they touch has no confidence, the others
    # keep theirs
    for unscored in (None, float("nan")):
        closed = lps[:5] + [unscored, unscored]
        assert range_probability(ranges, closed, [(10, 20)]) is None
        assert range_probability(ranges, closed, [(0, 9)]) == pytest.approx(math.exp(-0.6))


def test_token_ranges_clamp_a_prefix_that_decodes_longer() -> None:
    # a prefix ending inside a character decodes to a replacement character
    outs = {1: "\ufffd", 2: "é", 3: "éa"}
    assert token_ranges(lambda ids: outs[len(ids)], [7, 8, 9]) == [(0, 1), (1, 1), (1, 2)]


def test_ner_v1_span_scores_are_the_line_probabilities(tiny_hf, monkeypatch, table_decode) -> None:
    nlp = structured_nlp(
        tiny_hf, {"@llama_tasks": "spacy-llama.NER.v1", "labels": ["COMPANY", "CITY"]}
    )
    result, table = table_answer(
        [("COMPANY", -0.1), (":", -0.2), (" Acme", -0.3), ("\n", -4.0),
         ("- ", -0.7), ("CITY", -1.0), (":", -0.5), (" Oslo", -2.0)]
    )  # fmt: skip
    table_decode.append(table)
    answer_with(monkeypatch, result)
    doc = nlp("Acme opened an office in Oslo.")
    scores = {e.text: e._.llama_score for e in doc.ents}
    # the bullet "- " and the newline are not part of either line
    assert scores == {
        "Acme": pytest.approx(math.exp(-0.6)),
        "Oslo": pytest.approx(math.exp(-3.5)),
    }
    assert scores["Acme"] > scores["Oslo"]
    assert Span.has_extension("llama_score")


def test_ner_v2_scores_only_the_label_and_text_values(tiny_hf, monkeypatch, table_decode) -> None:
    nlp = structured_nlp(
        tiny_hf,
        {"@llama_tasks": "spacy-llama.NER.v2", "labels": ["COMPANY", "CITY"], "merge": "spans"},
        max_new_tokens=64,
    )
    result, table = table_answer(
        [('{"entities": [{"label": "', -3.0), ("COMPANY", -0.1), ('", "text": "', -3.0),
         ("Acme", -0.2), ('"}, {"label": "', -3.0), ("CITY", -0.4), ('", "text": "', -3.0),
         ("Oslo", -0.9), ('"}]}', -3.0)]
    )  # fmt: skip
    table_decode.append(table)
    answer_with(monkeypatch, result)
    doc = nlp("Acme opened an office in Oslo.")
    got = {s.text: s._.llama_score for s in doc.spans["llama_ner"]}
    assert got == {"Acme": pytest.approx(math.exp(-0.3)), "Oslo": pytest.approx(math.exp(-1.3))}


def test_ner_v2_span_cut_by_the_budget_has_no_score(tiny_hf, monkeypatch, table_decode) -> None:
    """An answer closed at its budget (finish "length", closing tokens unscored): the span
    whose text the closing tokens finished gets None, the span the model wrote its score."""
    nlp = structured_nlp(
        tiny_hf,
        {"@llama_tasks": "spacy-llama.NER.v2", "labels": ["COMPANY", "CITY"], "merge": "spans"},
        max_new_tokens=64,
    )
    result, table = table_answer(
        [('{"entities": [{"label": "', -3.0), ("COMPANY", -0.1), ('", "text": "', -3.0),
         ("Acme", -0.2), ('"}, {"label": "', -3.0), ("CITY", -0.4), ('", "text": "', -3.0),
         ("Os", -0.9), ("lo", None), ('"}]}', None)]
    )  # fmt: skip
    result.finish_reason = "length"
    result.closed = True
    table_decode.append(table)
    answer_with(monkeypatch, result)
    doc = nlp("Acme opened an office in Oslo.")
    got = {s.text: s._.llama_score for s in doc.spans["llama_ner"]}
    assert got == {"Acme": pytest.approx(math.exp(-0.3)), "Oslo": None}


def test_extract_scores_each_copied_string(tiny_hf, monkeypatch, table_decode) -> None:
    schema = {
        "type": "object",
        "properties": {"cities": {"type": "array", "items": {"type": "string"}}},
        "required": ["cities"],
    }
    nlp = structured_nlp(
        tiny_hf,
        {"@llama_tasks": "spacy-llama.Extract.v1", "schema": schema, "span_fields": ["cities"]},
        max_new_tokens=64,
    )
    result, table = table_answer(
        [('{"cities": ["', -2.0), ("Oslo", -0.25), ('", "', -2.0), ("Bergen", -1.5), ('"]}', -2.0)]
    )
    table_decode.append(table)
    answer_with(monkeypatch, result)
    doc = nlp("From Oslo to Bergen by train.")
    got = [(s.text, s._.llama_score) for s in doc.spans["llama_extract"]]
    assert got == [
        ("Oslo", pytest.approx(math.exp(-0.25))),
        ("Bergen", pytest.approx(math.exp(-1.5))),
    ]


def test_no_token_ids_give_no_score(tiny_hf, monkeypatch) -> None:
    nlp = structured_nlp(tiny_hf, {"@llama_tasks": "spacy-llama.NER.v1", "labels": ["CITY"]})
    answer_with(monkeypatch, GenerationResult(text="CITY: Oslo", finish_reason="stop"))
    doc = nlp("Oslo is cold.")
    assert [(e.text, e._.llama_score) for e in doc.ents] == [("Oslo", None)]


def test_json_objects_reads_braces_inside_strings() -> None:
    text = '{"entities": [{"label": "A", "text": "x}{"}, {"label": "B", "text": "y"}]}'
    objs = json_objects(text, "entities")
    assert [v for _, v in objs] == [{"label": "A", "text": "x}{"}, {"label": "B", "text": "y"}]
    assert text[objs[1][0][0] : objs[1][0][1]] == '{"label": "B", "text": "y"}'
