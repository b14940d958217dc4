"""The structured tasks end to end on the tiny random model with the engine's constrained
decoding: every doc's answer parses and matches its schema (its span strings are the doc's
own, on token boundaries), or the doc is marked failed with nothing written; never a
half-written object and never an exception for the batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import jsonschema
from spacy.tokens import Doc, Span

import spacy_llama.tasks.extract  # noqa: F401  (registers the three tasks)
import spacy_llama.tasks.ner_v2  # noqa: F401
import spacy_llama.tasks.rel  # noqa: F401
from spacy_llama.types import DOC_ERROR_KEY

from .structured_helpers import structured_nlp

TEXTS = ["Anna met Bob in Paris.", "Apple hired Tim in London.", "Zürich ist schön."]
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "place": {"type": "string"},
    },
    "required": ["people", "place"],
    "additionalProperties": False,
}


def run(tiny_hf: Path, task: Dict[str, Any], max_new_tokens: int) -> List[Doc]:
    nlp = structured_nlp(tiny_hf, task, max_new_tokens=max_new_tokens)
    docs = []
    for text in TEXTS:
        doc = nlp.make_doc(text)
        doc.ents = [Span(doc, 0, 1, "ORG"), Span(doc, 2, 3, "PERSON")]
        docs.append(doc)
    return list(nlp.get_pipe("llama").pipe(docs))


def test_extract_on_the_tiny_model_parses_or_fails_cleanly(tiny_hf):
    task = {
        "@llama_tasks": "spacy-llama.Extract.v1",
        "schema": SCHEMA,
        "span_fields": ["people", "place"],
    }
    docs = run(tiny_hf, task, max_new_tokens=48)
    parsed = [d for d in docs if DOC_ERROR_KEY not in d.user_data]
    assert parsed  # the grammar lets the random model finish the object on some docs
    for doc in parsed:
        jsonschema.validate(doc._.llama_data, SCHEMA)
        fields = [("people", t) for t in doc._.llama_data["people"]]
        fields.append(("place", doc._.llama_data["place"]))
        unique = list(dict.fromkeys(fields))  # each (field, span) written once
        got = [(s.label_, s.text) for s in doc.spans["llama_extract"]]
        assert got == unique
        assert all(
            doc.char_span(s.start_char, s.end_char) is not None for s in doc.spans["llama_extract"]
        )
    for doc in docs:
        if doc not in parsed:
            assert (
                "[E369]" in doc.user_data[DOC_ERROR_KEY]
                and "max_new_tokens" in doc.user_data[DOC_ERROR_KEY]
            )
            assert doc._.llama_data is None and "llama_extract" not in doc.spans


def test_ner_v2_and_rel_on_the_tiny_model(tiny_hf):
    ner = run(
        tiny_hf,
        {"@llama_tasks": "spacy-llama.NER.v2", "labels": ["COMPANY", "CITY"], "merge": "spans"},
        max_new_tokens=48,
    )
    for doc in ner:
        assert DOC_ERROR_KEY not in doc.user_data, doc.user_data[DOC_ERROR_KEY]
        assert all(s.label_ in {"COMPANY", "CITY"} for s in doc.spans["llama_ner"])
    rel = run(
        tiny_hf, {"@llama_tasks": "spacy-llama.REL.v1", "labels": ["works_for"]}, max_new_tokens=48
    )
    for doc in rel:
        assert DOC_ERROR_KEY not in doc.user_data, doc.user_data[DOC_ERROR_KEY]
        for r in doc._.llama_relations:
            assert {r["head"], r["tail"]} <= {0, 1} and r["head"] != r["tail"]
            assert r["relation"] == "works_for"
    assert json.dumps([d._.llama_relations for d in rel])  # plain JSON data
