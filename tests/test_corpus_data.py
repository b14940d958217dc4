"""Checks on the hand-written data in corpus/ (gold set, sample corpus, few-shot examples)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
GOLD_JSONL = CORPUS / "gold.jsonl"
GOLD_SPACY = CORPUS / "gold.spacy"


def _load_build_gold():
    spec = importlib.util.spec_from_file_location("build_gold", CORPUS / "build_gold.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_gold = _load_build_gold()


def _read_jsonl(path: Path) -> list:
    with path.open(encoding="utf8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def gold_records() -> list:
    return _read_jsonl(GOLD_JSONL)


@pytest.fixture(scope="module")
def gold_docs() -> list:
    nlp = spacy.blank("en")
    return list(DocBin().from_disk(GOLD_SPACY).get_docs(nlp.vocab))


def test_gold_jsonl_is_valid(gold_records):
    assert build_gold.validate(gold_records, spacy.blank("en")) == []


def test_gold_size_and_balance(gold_records):
    assert len(gold_records) >= 100
    cats = Counter(max(r["cats"], key=r["cats"].__getitem__) for r in gold_records)
    assert set(cats) == set(build_gold.CATEGORIES)
    for cat in build_gold.CATEGORIES:
        assert cats[cat] >= 15, cats
    for r in gold_records:
        assert sorted(r["cats"].values()) == [0.0, 0.0, 0.0, 1.0], r["id"]


def test_gold_ids_unique(gold_records):
    ids = [r["id"] for r in gold_records]
    assert len(ids) == len(set(ids))


def test_gold_entity_offsets_align(gold_records):
    nlp = spacy.blank("en")
    labels = Counter()
    for r in gold_records:
        doc = nlp.make_doc(r["text"])
        for start, end, label in r["ents"]:
            span = doc.char_span(start, end, label=label)
            assert span is not None, (r["id"], r["text"][start:end])
            assert span.text == r["text"][start:end]
            assert label in build_gold.LABELS
            labels[label] += 1
    # every allowed label is actually used
    assert all(labels[label] > 0 for label in build_gold.LABELS), labels


def test_gold_spacy_loads(gold_docs, gold_records):
    assert len(gold_docs) == len(gold_records)
    for doc, rec in zip(gold_docs, gold_records):
        assert doc.user_data[build_gold.ID_KEY] == rec["id"]
        assert doc.text == rec["text"]
        assert doc.cats == rec["cats"]
        ents = [[e.start_char, e.end_char, e.label_] for e in doc.ents]
        assert ents == sorted(rec["ents"])


def test_gold_spacy_matches_rebuild(tmp_path, gold_docs):
    out = tmp_path / "gold.spacy"
    rebuilt = build_gold.build(GOLD_JSONL, out)
    loaded = list(DocBin().from_disk(out).get_docs(spacy.blank("en").vocab))
    assert len(rebuilt) == len(loaded) == len(gold_docs)
    for new, old in zip(loaded, gold_docs):
        assert new.text == old.text
        assert new.cats == old.cats
        assert new.user_data == old.user_data
        assert [(e.start_char, e.end_char, e.label_) for e in new.ents] == [
            (e.start_char, e.end_char, e.label_) for e in old.ents
        ]
    # the committed file is exactly what the build script produces
    assert out.read_bytes() == GOLD_SPACY.read_bytes()


def test_validate_rejects_bad_records():
    nlp = spacy.blank("en")
    cats = {"business": 1.0, "sport": 0.0, "science_tech": 0.0, "politics": 0.0}
    good = {"id": "x1", "text": "Apple hired Tim Cook.", "cats": cats, "ents": [[0, 5, "ORG"]]}
    assert build_gold.validate([good], nlp) == []
    bad = [
        dict(good),  # duplicate id
        {**good, "id": "x2", "cats": {**cats, "sport": 1.0}},
        {**good, "id": "x3", "ents": [[1, 5, "ORG"]]},  # not token-aligned
        {**good, "id": "x4", "ents": [[0, 5, "PRODUCT"]]},  # label not allowed
        {**good, "id": "x5", "ents": [[0, 5, "ORG"], [0, 11, "ORG"]]},  # overlap
        {**good, "id": "x6", "ents": [[12, 99, "PERSON"]]},  # out of range
    ]
    problems = build_gold.validate([good, *bad], nlp)
    for rid in ("'x1'", "'x2'", "'x3'", "'x4'", "'x5'", "'x6'"):
        assert any(rid in p for p in problems), (rid, problems)


def test_sample_corpus():
    records = _read_jsonl(CORPUS / "sample.jsonl")
    assert len(records) == 32
    ids = [r["id"] for r in records]
    assert len(set(ids)) == 32
    for r in records:
        assert isinstance(r["text"], str) and r["text"].strip()
        assert r["source"]
        assert 15 <= len(r["text"].split()) <= 60
    lines = (CORPUS / "sample.txt").read_text(encoding="utf8").splitlines()
    assert lines == [r["text"] for r in records]


def test_fewshot_examples_not_in_gold(gold_records):
    gold_texts = {r["text"] for r in gold_records}
    textcat = _read_jsonl(CORPUS / "fewshot_textcat.jsonl")
    assert len(textcat) == 8
    assert Counter(ex["label"] for ex in textcat) == {c: 2 for c in build_gold.CATEGORIES}
    ner = _read_jsonl(CORPUS / "fewshot_ner.jsonl")
    assert len(ner) == 5
    for ex in ner:
        for ent in ex["entities"]:
            assert ent["text"] in ex["text"]
            assert ent["label"] in build_gold.LABELS
    for ex in textcat + ner:
        assert ex["text"] not in gold_texts


def _load_split_gold():
    spec = importlib.util.spec_from_file_location("split_gold", CORPUS / "split_gold.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splits_are_disjoint_complete_and_committed(tmp_path, gold_docs):
    """The committed train/dev/test DocBins are what split_gold.py writes, they partition
    each set, and gold's test part is the half evaluate_tasks.py calls test (never tuned on)."""
    split_gold = _load_split_gold()
    assert split_gold.main(["--output", str(tmp_path)]) == 0
    vocab = spacy.blank("en").vocab
    for name, total in (("gold", len(gold_docs)), ("unseen", 50)):
        ids = {}
        for split in split_gold.SPLITS:
            path = tmp_path / f"{name}_{split}.spacy"
            committed = CORPUS / "splits" / path.name
            docs = list(DocBin().from_disk(committed).get_docs(vocab))
            assert [d.text for d in docs] == [
                d.text for d in DocBin().from_disk(path).get_docs(vocab)
            ]
            ids[split] = {d.user_data["spacy_llama_id"] for d in docs}
            assert all(d.cats for d in docs)
        assert sum(len(v) for v in ids.values()) == total
        assert not (
            ids["train"] & ids["dev"] or ids["train"] & ids["test"] or ids["dev"] & ids["test"]
        )
    evaluate_spec = importlib.util.spec_from_file_location(
        "evaluate_tasks", CORPUS.parent / "benchmarks" / "evaluate_tasks.py"
    )
    assert evaluate_spec is not None and evaluate_spec.loader is not None
    evaluate_tasks = importlib.util.module_from_spec(evaluate_spec)
    evaluate_spec.loader.exec_module(evaluate_tasks)
    test_ids = {
        d.user_data["spacy_llama_id"] for d in gold_docs if evaluate_tasks.split_of(d) == "test"
    }
    assert test_ids == ids_of(CORPUS / "splits" / "gold_test.spacy")


def ids_of(path: Path) -> set:
    docs = DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)
    return {d.user_data["spacy_llama_id"] for d in docs}
