"""Split the labelled sets into train / dev / test DocBins, deterministically.

Usage:
    python corpus/split_gold.py [--output corpus/splits]

Writes ``gold_train.spacy``, ``gold_dev.spacy``, ``gold_test.spacy`` (from gold.spacy) and
``unseen_train.spacy``, ``unseen_dev.spacy``, ``unseen_test.spacy`` (from
unseen_textcat.jsonl), and prints the counts.

The rule is the first byte ``b`` of sha256(doc id):
- ``b`` odd: test. This is the test half ``benchmarks/evaluate_tasks.py`` has always used,
  so nothing chosen so far (TextCat.v2's defaults were picked on the even half) has looked at
  it; never tune on it.
- ``b`` even: train when ``b % 8`` is 0, 2 or 4; dev when it is 6 (dev is what training
  and hyper-parameter choices may look at).

The unseen set (five classes, different word counts) was written for a held-out check and
has no other use: its split follows the same rule, and its test part is the never-seen data
that quality claims are also measured on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List

import spacy
from spacy.tokens import Doc, DocBin

HERE = Path(__file__).resolve().parent
ID_KEY = "spacy_llama_id"
SPLITS = ("train", "dev", "test")


def split_of(doc_id: str) -> str:
    b = hashlib.sha256(doc_id.encode("utf8")).digest()[0]
    if b % 2 == 1:
        return "test"
    return "dev" if b % 8 == 6 else "train"


def gold_docs() -> List[Doc]:
    nlp = spacy.blank("en")
    return list(DocBin().from_disk(HERE / "gold.spacy").get_docs(nlp.vocab))


def unseen_docs() -> List[Doc]:
    nlp = spacy.blank("en")
    docs = []
    for line in (HERE / "unseen_textcat.jsonl").read_text(encoding="utf8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        doc = nlp.make_doc(rec["text"])
        doc.cats = {k: float(v) for k, v in rec["cats"].items()}
        doc.user_data[ID_KEY] = rec["id"]
        docs.append(doc)
    return docs


def write_splits(name: str, docs: Iterable[Doc], out: Path) -> Dict[str, Counter]:
    parts: Dict[str, List[Doc]] = {s: [] for s in SPLITS}
    for doc in docs:
        parts[split_of(str(doc.user_data[ID_KEY]))].append(doc)
    counts: Dict[str, Counter] = {}
    for split, part in parts.items():
        DocBin(docs=part, store_user_data=True).to_disk(out / f"{name}_{split}.spacy")
        counts[split] = Counter(max(d.cats, key=lambda k: d.cats[k]) for d in part)
    return counts


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "splits")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, docs in (("gold", gold_docs()), ("unseen", unseen_docs())):
        for split, counts in write_splits(name, docs, args.output).items():
            total = sum(counts.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"{name}_{split}: {total} docs ({detail})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
