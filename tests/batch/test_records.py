"""batch/records.py: what a Doc becomes in the JSONL output."""

from __future__ import annotations

import spacy
from spacy.tokens import Span

from spacy_llama.batch.reader import Record
from spacy_llama.batch.records import doc_record


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
