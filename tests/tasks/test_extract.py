"""spacy-llama.Extract.v1: the per-doc schema (span fields an enum of the doc's token
n-grams), parsing and validation, span writing, failed docs and bad configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

import spacy_llama.tasks.extract  # noqa: F401  (registers spacy-llama.Extract.v1)
from spacy_llama.errors import SchemaError
from spacy_llama.tasks.extract import extract_task_v1
from spacy_llama.tasks.structured import candidate_substrings
from spacy_llama.types import DOC_ERROR_KEY, GenerationResult

from .structured_helpers import answer_with, docbin_roundtrip, structured_nlp

SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {"type": "array", "items": {"type": "string"}},
        "place": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["people", "place", "summary"],
    "additionalProperties": False,
}
TASK = {
    "@llama_tasks": "spacy-llama.Extract.v1",
    "schema": SCHEMA,
    "span_fields": ["people", "place"],
}


def two_sentences(nlp: spacy.Language) -> Doc:
    """Multi-byte text, a repeated name, and sentence boundaries set by hand."""
    words = ["Anna", "met", "Björn", "in", "Zürich", ".", "Anna", "left", "東京", "."]
    spaces = [True, True, True, True, False, True, True, True, False, False]
    starts = [True] + [False] * 5 + [True] + [False] * 3
    return Doc(nlp.vocab, words=words, spaces=spaces, sent_starts=starts)


def ok(value: Any) -> GenerationResult:
    return GenerationResult(text=json.dumps(value, ensure_ascii=False), finish_reason="stop")


def test_candidates_are_token_ngrams_inside_sentences():
    doc = two_sentences(spacy.blank("en"))
    cands = candidate_substrings(doc, max_span_tokens=3)
    assert cands[:4] == ["Anna", "Anna met", "Anna met Björn", "met"]
    assert len(cands) == len(set(cands))  # "Anna" occurs twice, listed once
    assert "Zürich . Anna" not in cands and "Zürich. Anna" not in cands  # crosses a sentence
    assert "Anna met Björn in" not in cands  # longer than max_span_tokens
    assert "Zürich." not in cands and "." not in cands  # no edge punctuation
    assert {"東京", "Anna left 東京", "Björn in Zürich"} <= set(cands)
    for text in cands:
        start = doc.text.find(text)
        assert doc.char_span(start, start + len(text)) is not None  # on token boundaries


def test_without_sentences_ngrams_span_the_doc():
    nlp = spacy.blank("en")
    doc = nlp.make_doc("Hi Bo. Yo")
    assert "Bo. Yo" in candidate_substrings(doc, 8)  # no sentence boundaries to respect


def test_request_constrains_span_fields_to_the_docs_substrings(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    seen = answer_with(monkeypatch, ok({"people": [], "place": "Zürich", "summary": "x"}))
    doc = two_sentences(nlp)
    nlp.get_pipe("llama")(doc)
    constraint = seen[0].constraint
    assert constraint is not None and constraint.kind == "json_schema"
    spec = json.loads(constraint.spec)
    cands = candidate_substrings(doc, 8)
    assert spec["properties"]["people"]["items"]["enum"] == cands
    assert spec["properties"]["place"]["enum"] == cands
    assert "enum" not in spec["properties"]["summary"]  # not a span field: free text
    assert "enum" not in json.dumps(SCHEMA)  # the configured schema is not changed


def test_assign_writes_data_and_spans_in_order(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, {**TASK, "spans_key": "ex", "data_attr": "ex_data"})
    value = {"people": ["Anna", "Björn", "Anna"], "place": "Zürich", "summary": "They met."}
    answer_with(monkeypatch, ok(value))
    doc = nlp.get_pipe("llama")(two_sentences(nlp))
    assert doc._.ex_data == value
    got = [(s.text, s.label_, s.start) for s in doc.spans["ex"]]
    # the second "Anna" is the second occurrence (token 6), not the first again
    assert got == [
        ("Anna", "people", 0),
        ("Björn", "people", 2),
        ("Anna", "people", 6),
        ("Zürich", "place", 4),
    ]
    assert DOC_ERROR_KEY not in doc.user_data
    extensions = ["ex_data", "ex_data_confidence", "llama_finish"]
    assert nlp.get_pipe("llama").task.extensions == extensions


def test_a_string_repeated_beyond_its_occurrences_is_one_span(tiny_hf, monkeypatch):
    """Issue 26: twelve "Björn" for one occurrence wrote twelve identical spans."""
    nlp = structured_nlp(tiny_hf, {**TASK, "spans_key": "ex"})
    value = {"people": ["Björn"] * 12 + ["Anna"] * 3, "place": "Zürich", "summary": "x"}
    answer_with(monkeypatch, ok(value))
    doc = nlp.get_pipe("llama")(two_sentences(nlp))
    got = [(s.text, s.start) for s in doc.spans["ex"]]
    assert got == [("Björn", 2), ("Anna", 6), ("Anna", 0), ("Zürich", 4)]


@pytest.mark.parametrize(
    "error,code",
    [
        # our engine: finish_reason "length" and the reason in `error`
        ("[E426] the output reached max_new_tokens=24 before the json_schema constraint", "E369"),
        (None, "E373"),  # a server cut it off without saying why: the JSON is incomplete
    ],
)
def test_answer_cut_off_by_max_new_tokens_fails_the_doc(tiny_hf, monkeypatch, error, code):
    nlp = structured_nlp(tiny_hf, TASK)
    cut = GenerationResult(text='{"people": ["An', finish_reason="length", error=error)
    answer_with(monkeypatch, cut)
    doc = nlp.get_pipe("llama")(two_sentences(nlp))
    reason = doc.user_data[DOC_ERROR_KEY]
    assert reason.startswith(f"Extract.v1: [{code}]") and "max_new_tokens" in reason
    assert doc._.llama_data is None and "llama_extract" not in doc.spans


@pytest.mark.parametrize(
    "text,code",
    [
        ('{"people": ["Anna"], "place": "Paris", "summary": "x"}', "[E371]"),  # not in doc
        ('{"people": ["Anna"], "place": "Zürich"}', "[E371]"),  # a required field missing
        ("people: Anna", "[E370]"),  # not JSON (an unconstrained server)
    ],
)
def test_answer_not_matching_the_schema_fails_the_doc(tiny_hf, monkeypatch, text, code):
    nlp = structured_nlp(tiny_hf, TASK)
    answer_with(monkeypatch, GenerationResult(text=text, finish_reason="stop"))
    doc = nlp.get_pipe("llama")(two_sentences(nlp))
    assert doc.user_data[DOC_ERROR_KEY].startswith(f"Extract.v1: {code}")
    assert doc._.llama_data is None and "llama_extract" not in doc.spans


def test_empty_doc_no_call_nothing_found(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    seen = answer_with(monkeypatch)
    doc = nlp("")
    assert (
        seen[0].prompt == "" and doc._.llama_data is None and list(doc.spans["llama_extract"]) == []
    )


def test_docbin_roundtrip_and_score(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    value = {"people": ["Anna", "Björn"], "place": "東京", "summary": "A trip."}
    answer_with(monkeypatch, ok(value))
    doc = nlp.get_pipe("llama")(two_sentences(nlp))
    back = docbin_roundtrip(doc)
    assert dict(back._.llama_data) == {**value, "people": tuple(value["people"])}  # msgpack: tuples
    assert [(s.text, s.label_) for s in back.spans["llama_extract"]] == [
        ("Anna", "people"),
        ("Björn", "people"),
        ("東京", "place"),
    ]
    gold = two_sentences(nlp)
    gold.spans["llama_extract"] = [Span(gold, 0, 1, "people"), Span(gold, 2, 3, "people")]
    scores = nlp.get_pipe("llama").task.score([Example(doc, gold)])
    assert scores["spans_llama_extract_p"] == pytest.approx(2 / 3)
    assert scores["spans_llama_extract_r"] == 1.0


def build(**kwargs: Any) -> Any:
    return extract_task_v1(**{"schema": SCHEMA, "span_fields": ["people"], **kwargs})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"span_fields": ["summary", "age"]}, r"\[E365\].*'age'"),
        (
            {
                "schema": {
                    **SCHEMA,
                    "properties": {**SCHEMA["properties"], "age": {"type": "integer"}},
                },
                "span_fields": ["age"],
            },
            r"\[E366\].*'age'",
        ),
        (
            {"schema": {"type": "object", "properties": {"a": {"type": "strin"}}}},
            r"\[E363\] Extract.v1: `schema` is not a valid JSON schema.*properties/a/type",
        ),
        ({"schema": '{"type": "object", "properties": '}, r"\[E362\].*`schema` is not valid JSON"),
        ({"schema": {"type": "array"}}, r"\[E364\]"),
        ({"schema": None}, r"\[E360\].*neither"),
        ({"schema_path": "x.json"}, r"\[E360\].*both"),
        ({"span_fields": ["people", "people"]}, r"\[E372\]"),
        ({"max_span_tokens": 0}, r"\[E367\]"),
    ],
)
def test_bad_config_is_a_coded_error_naming_the_setting(kwargs, match):
    with pytest.raises(SchemaError, match=match):
        build(**kwargs)


def test_schema_path(tmp_path: Path):
    with pytest.raises(SchemaError, match=r"\[E361\].*missing.json"):
        build(schema=None, schema_path=str(tmp_path / "missing.json"))
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    assert build(schema=None, schema_path=str(tmp_path / "s.json")).schema == SCHEMA
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"\[E362\].*schema_path"):
        build(schema=None, schema_path=str(tmp_path / "bad.json"))


def test_v1_stays_as_released_and_v2_adds_the_string_cap_and_calibration():
    from spacy_llama.tasks.extract import extract_task_v1, extract_task_v2

    v1 = extract_task_v1(schema=SCHEMA, span_fields=["people", "place"])
    v2 = extract_task_v2(
        schema=SCHEMA, span_fields=["people", "place"], max_string_tokens=8, calibrate=True
    )
    assert (v1.max_string_tokens, v1.calibrate) == (0, False)  # 0: no cap
    assert (v2.max_string_tokens, v2.calibrate) == (8, True)
    with pytest.raises(TypeError, match="max_string_tokens"):
        extract_task_v1(schema=SCHEMA, max_string_tokens=8)  # type: ignore[call-arg]
