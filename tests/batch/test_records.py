"""batch/records.py: what a Doc becomes in the JSONL output."""

from __future__ import annotations

import json

import spacy
from spacy.tokens import Span

from spacy_llama.batch.reader import Record
from spacy_llama.batch.records import doc_record

from ..fixtures.helpers import tiny_model


def test_span_groups_reach_the_record_and_empty_ones_do_not() -> None:
    """Span groups (NER with merge = "spans", Extract's span fields) are output as
    [start_char, end_char, label] per group; before, they only reached --docbin."""
    doc = spacy.blank("en")("Anna met Ben in Paris.")
    doc.spans["llama_ner"] = [Span(doc, 0, 1, label="PERSON"), Span(doc, 4, 5, label="GPE")]
    doc.spans["empty"] = []
    record = doc_record(doc, Record(id="d0", raw_id="d0", text=doc.text), extensions=[])
    assert record["spans"] == {"llama_ner": [[0, 4, "PERSON"], [16, 21, "GPE"]]}
    plain = spacy.blank("en")("Nothing here.")
    assert "spans" not in doc_record(plain, Record(id="d1", raw_id="d1", text="x"), extensions=[])


def test_entity_review_values_are_the_fourth_element_of_each_entity(tiny_hf) -> None:
    """EntityReview's Span extensions reach the record (before, only `ents` as triples)."""
    from spacy.tokens import Doc

    from spacy_llama.batch.records import pipeline_extensions

    nlp = spacy.blank("en")
    task = {"@llama_tasks": "spacy-llama.EntityReview.v1", "labels": ["PERSON", "ORG"]}
    nlp.add_pipe("llama", config={"model": tiny_model(tiny_hf), "task": task})
    extensions = pipeline_extensions(nlp)
    assert extensions == ["span._.llama_label", "span._.llama_scores"]
    doc = Doc(nlp.vocab, words=["Anna", "met", "Ben", "."], ents=["B-PERSON", "O", "B-ORG", "O"])
    doc = nlp.get_pipe("llama")(doc)
    record = doc_record(doc, Record(id="d", raw_id="d", text=doc.text), extensions=extensions)
    assert len(record["ents"]) == 2
    for *_, values in record["ents"]:
        assert set(values) == {"llama_label", "llama_scores"}
        assert values["llama_label"] in ("PERSON", "ORG")
        assert set(values["llama_scores"]) == {"PERSON", "ORG"}
        assert abs(sum(values["llama_scores"].values()) - 1.0) < 1e-6
    assert "tokens" not in record  # no token extension: no token array
    json.dumps(record)


def test_a_span_without_extension_values_stays_a_triple() -> None:
    if not Span.has_extension("rec_score"):
        Span.set_extension("rec_score", default=None)
    doc = spacy.blank("en")("Anna met Ben.")
    first, second = Span(doc, 0, 1, label="PERSON"), Span(doc, 2, 3, label="PERSON")
    first._.rec_score = 0.93
    doc.ents = [first, second]
    doc.spans["grp"] = [first]
    record = Record(id="d", raw_id="d", text=doc.text)
    rec = doc_record(doc, record, extensions=["span._.rec_score"])
    assert rec["ents"] == [[0, 4, "PERSON", {"rec_score": 0.93}], [9, 12, "PERSON"]]
    assert rec["spans"] == {"grp": [[0, 4, "PERSON", {"rec_score": 0.93}]]}


def test_surprisal_token_values_are_arrays_aligned_to_tokens(tiny_hf) -> None:
    from spacy_llama.batch.records import pipeline_extensions

    nlp = spacy.blank("en")
    task = {"@llama_tasks": "spacy-llama.Surprisal.v1"}
    nlp.add_pipe("llama", config={"model": tiny_model(tiny_hf), "task": task})
    extensions = pipeline_extensions(nlp)
    doc = nlp("The cat sat on the mat.")
    record = doc_record(doc, Record(id="d", raw_id="d", text=doc.text), extensions=extensions)
    assert record["tokens"] == [[t.idx, t.idx + len(t), t.text] for t in doc]
    assert len(record["llama_logprob"]) == len(doc)
    assert record["llama_logprob"] == [t._.llama_logprob for t in doc]
    assert any(isinstance(v, float) for v in record["llama_logprob"])
    assert isinstance(record["llama_perplexity"], float)  # the Doc extension as before


def test_print_shows_cats_and_span_groups() -> None:
    from spacy_llama.batch.records import format_doc

    doc = spacy.blank("en")("Anna met Ben in Paris.")
    doc.cats = {"sport": 0.2, "politics": 0.8}
    doc.spans["llama_extract"] = [Span(doc, 4, 5, label="city")]
    text = format_doc(doc, Record(id="d", raw_id="d", text=doc.text), extensions=[])
    assert "cats: politics 0.80, sport 0.20" in text
    assert "spans[llama_extract]: Paris (city)" in text
