"""spacy-llama.NER.v2: a JSON answer constrained to the labels and the doc's substrings,
aligned and merged as NER.v1 does; few-shot examples shown as JSON; failed docs."""

from __future__ import annotations

import json
from typing import Any, List

import pytest
import spacy
from spacy.tokens import Doc

import spacy_llama.tasks.ner_v2  # noqa: F401  (registers spacy-llama.NER.v2)
from spacy_llama.errors import FewShotError, SchemaError
from spacy_llama.tasks.labels import labels_context
from spacy_llama.tasks.ner_v2 import example_answer, ner_task_v2
from spacy_llama.tasks.structured import candidate_substrings
from spacy_llama.types import DOC_ERROR_KEY, GenerationResult

from .structured_helpers import answer_with, docbin_roundtrip, structured_nlp

TASK = {
    "@llama_tasks": "spacy-llama.NER.v2",
    "labels": ["COMPANY", "CITY"],
    "verbalizers": {"CITY": "city"},
}


def annotated_doc(nlp: spacy.Language) -> Doc:
    """Upstream entities set by hand; "Apple" twice."""
    words = ["Tim", "Cook", "of", "Apple", "flew", "to", "London", "for", "Apple", "."]
    return Doc(
        nlp.vocab,
        words=words,
        spaces=[True] * 8 + [False, False],
        ents=["B-PERSON", "I-PERSON", "O", "B-ORG", "O", "O", "B-GPE", "O", "O", "O"],
    )


def entities(*pairs: Any) -> GenerationResult:
    ents = [{"label": label, "text": text} for label, text in pairs]
    return GenerationResult(text=json.dumps({"entities": ents}), finish_reason="stop")


def test_request_enums_are_the_labels_and_the_docs_substrings(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    seen = answer_with(monkeypatch, entities())
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    spec = json.loads(seen[0].constraint.spec)
    item = spec["properties"]["entities"]["items"]["properties"]
    assert item["label"]["enum"] == ["COMPANY", "city"]  # what the model writes: verbalizers
    assert item["text"]["enum"] == candidate_substrings(doc, 8)
    assert spec["required"] == ["entities"]


def test_fewshot_examples_are_rendered_as_the_json_answer():
    examples = [{"text": "Acme is in Rome.", "entities": [{"text": "Rome", "label": "CITY"}]}]
    task = ner_task_v2(labels=TASK["labels"], verbalizers=TASK["verbalizers"], examples=examples)
    shown = [{**ex, "json": example_answer(ex)} for ex in task.examples]
    # Rendered without the formatter: the tiny model's context is too short for this prompt.
    prompt = task.template.render_doc(
        spacy.blank("en").make_doc("Hi there."), labels=labels_context(task.labels), examples=shown
    )
    answer = '{"entities": [{"label": "city", "text": "Rome"}]}'
    assert f"Text: Acme is in Rome.\nEntities: {answer}\n" in prompt
    assert prompt.endswith("Text: Hi there.\nEntities:")


def test_spans_repeated_names_in_order_and_overlaps_reported(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, {**TASK, "merge": "spans", "overlaps_attr": "ner_overlaps"})
    answer_with(
        monkeypatch,
        entities(
            ("COMPANY", "Apple"),
            ("city", "London"),
            ("COMPANY", "Apple"),
            ("COMPANY", "Apple flew"),
        ),
    )
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    got = [(s.text, s.label_, s.start) for s in doc.spans["llama_ner"]]
    # the second "Apple" is the second occurrence; the longer of two overlapping answers wins
    assert got == [("Apple flew", "COMPANY", 3), ("London", "CITY", 6), ("Apple", "COMPANY", 8)]
    assert [(p["text"], p["reason"]) for p in doc._.ner_overlaps] == [
        ("Apple", "overlaps another answer")
    ]
    assert [e.label_ for e in doc.ents] == ["PERSON", "ORG", "GPE"]  # spans mode: untouched
    back = docbin_roundtrip(doc)
    assert [(s.text, s.label_) for s in back.spans["llama_ner"]] == [
        ("Apple flew", "COMPANY"),
        ("London", "CITY"),
        ("Apple", "COMPANY"),
    ]
    assert [dict(p) for p in back._.ner_overlaps] == doc._.ner_overlaps


@pytest.mark.parametrize(
    "merge,expected",
    [
        # the first "Apple" overlaps the upstream ORG; the second is new
        ("keep_upstream", ["Tim Cook/PERSON", "Apple/ORG", "London/GPE", "Apple/COMPANY"]),
        ("prefer_llama", ["Tim/CITY", "Apple/COMPANY", "London/GPE", "Apple/COMPANY"]),
    ],
)
def test_merge_reuses_ner_v1(tiny_hf, monkeypatch, merge: str, expected: List[str]):
    nlp = structured_nlp(tiny_hf, {**TASK, "merge": merge})
    answer_with(monkeypatch, entities(("city", "Tim"), ("COMPANY", "Apple"), ("COMPANY", "Apple")))
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert [f"{e.text}/{e.label_}" for e in doc.ents] == expected


def test_cut_off_answer_fails_the_doc_and_leaves_its_entities(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    cut = GenerationResult(
        text='{"entities": [{"label": "ci',
        finish_reason="length",
        error="max_new_tokens reached inside the JSON",
    )
    answer_with(monkeypatch, cut)
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert doc.user_data[DOC_ERROR_KEY].startswith("NER.v2: [E369]")
    assert [e.label_ for e in doc.ents] == ["PERSON", "ORG", "GPE"]
    assert doc._.llama_ner_overlaps is None  # nothing written


def test_bad_config():
    # labels = [] builds (they come from the training data; without an adapter block the
    # component refuses it: tests/training/test_initialize_labels.py)
    assert ner_task_v2(labels=[]).needs_labels
    with pytest.raises(SchemaError, match=r"\[E367\] NER.v2"):
        ner_task_v2(labels=["CITY"], max_span_tokens=0)
    with pytest.raises(FewShotError, match="Unknown label 'GPE'"):
        ner_task_v2(
            labels=["CITY"],
            examples=[{"text": "Rome", "entities": [{"text": "Rome", "label": "GPE"}]}],
        )


def test_max_entities_bounds_the_answer():
    nlp = spacy.blank("en")
    task = ner_task_v2(labels=["CITY"], max_entities=3)
    spec = task.schema_for(nlp.make_doc("Rome and Paris"))
    assert spec["properties"]["entities"]["maxItems"] == 3
    unbounded = ner_task_v2(labels=["CITY"], max_entities=None).schema_for(nlp.make_doc("Rome"))
    assert "maxItems" not in unbounded["properties"]["entities"]
    with pytest.raises(SchemaError, match=r"\[E374\] NER.v2: max_entities = 0"):
        ner_task_v2(labels=["CITY"], max_entities=0)
