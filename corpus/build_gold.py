"""Validate corpus/gold.jsonl and write corpus/gold.spacy (a spaCy DocBin).

Usage:
    python corpus/build_gold.py [--input corpus/gold.jsonl] [--output corpus/gold.spacy]

Each line of the input is {"id", "text", "cats", "ents"} (see corpus/README.md). The script
checks that ids are unique, exactly one category is 1.0 and the others 0.0, entity offsets are
in range, aligned to spacy.blank("en") token boundaries, use an allowed label and do not
overlap. Docs are stored with doc.cats, doc.ents and doc.user_data["spacy_llama_id"]. Category
and entity-label counts are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "gold.jsonl"
DEFAULT_OUTPUT = HERE / "gold.spacy"

CATEGORIES = ("business", "sport", "science_tech", "politics")
LABELS = ("PERSON", "ORG", "GPE", "DATE", "MONEY")
ID_KEY = "spacy_llama_id"


class GoldError(ValueError):
    """Raised when gold.jsonl breaks one of the rules in corpus/README.md."""


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    records = []
    with Path(path).open(encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise GoldError(f"{path}:{lineno}: invalid JSON: {e}") from e
    return records


def validate(records: Iterable[Dict[str, Any]], nlp: Language) -> List[str]:
    """Return a list of problems (empty if the records are valid)."""
    problems: List[str] = []
    seen_ids: set = set()
    for i, rec in enumerate(records):
        rid = rec.get("id")
        where = f"record {i} ({rid!r})"
        if set(rec) != {"id", "text", "cats", "ents"}:
            problems.append(f"{where}: keys must be id, text, cats, ents; got {sorted(rec)}")
            continue
        if not isinstance(rid, str) or not rid:
            problems.append(f"{where}: id must be a non-empty string")
        elif rid in seen_ids:
            problems.append(f"{where}: duplicate id")
        seen_ids.add(rid)
        text = rec["text"]
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: empty text")
            continue
        if text != text.strip():
            problems.append(f"{where}: text has leading/trailing whitespace")
        cats = rec["cats"]
        if not isinstance(cats, dict) or set(cats) != set(CATEGORIES):
            problems.append(f"{where}: cats must have exactly the keys {CATEGORIES}")
        else:
            values = sorted(cats.values())
            if values != [0.0] * (len(CATEGORIES) - 1) + [1.0]:
                problems.append(f"{where}: exactly one category must be 1.0, others 0.0: {cats}")
        doc = nlp.make_doc(text)
        spans: List[Tuple[int, int]] = []
        for ent in rec["ents"]:
            if not (isinstance(ent, list) and len(ent) == 3):
                problems.append(f"{where}: entity must be [start, end, label]: {ent!r}")
                continue
            start, end, label = ent
            if not (isinstance(start, int) and isinstance(end, int)):
                problems.append(f"{where}: offsets must be ints: {ent!r}")
                continue
            if label not in LABELS:
                problems.append(f"{where}: label {label!r} not in {LABELS}")
            if not 0 <= start < end <= len(text):
                problems.append(f"{where}: offsets out of range: {ent!r}")
                continue
            span_text = text[start:end]
            if span_text != span_text.strip():
                problems.append(f"{where}: entity has surrounding whitespace: {span_text!r}")
            if doc.char_span(start, end) is None:
                problems.append(f"{where}: {span_text!r} [{start}, {end}] not token-aligned")
            spans.append((start, end))
        spans.sort()
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            if s2 < e1:
                problems.append(f"{where}: overlapping entities {text[s1:e1]!r}, {text[s2:e2]!r}")
    return problems


def make_doc(nlp: Language, rec: Dict[str, Any]) -> Doc:
    doc = nlp.make_doc(rec["text"])
    doc.ents = [doc.char_span(s, e, label=label) for s, e, label in rec["ents"]]
    doc.cats = {c: float(rec["cats"][c]) for c in CATEGORIES}
    doc.user_data[ID_KEY] = rec["id"]
    return doc


def build(input_path: Path = DEFAULT_INPUT, output_path: Path = DEFAULT_OUTPUT) -> List[Doc]:
    """Validate input_path and write output_path; return the docs."""
    nlp = spacy.blank("en")
    records = read_jsonl(Path(input_path))
    problems = validate(records, nlp)
    if problems:
        raise GoldError(f"{input_path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    docs = [make_doc(nlp, rec) for rec in records]
    db = DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], store_user_data=True)
    for doc in docs:
        db.add(doc)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    db.to_disk(output_path)
    return docs


def counts(docs: Iterable[Doc]) -> Tuple[Counter, Counter]:
    cats: Counter = Counter()
    labels: Counter = Counter()
    for doc in docs:
        cats[max(doc.cats, key=doc.cats.__getitem__)] += 1
        labels.update(ent.label_ for ent in doc.ents)
    return cats, labels


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    try:
        docs = build(args.input, args.output)
    except GoldError as e:
        print(e, file=sys.stderr)
        return 1
    cats, labels = counts(docs)
    print(f"wrote {len(docs)} docs to {args.output}")
    print("categories:")
    for c in CATEGORIES:
        print(f"  {c:<13} {cats[c]:>4}")
    print(f"entities ({sum(labels.values())}):")
    for label in LABELS:
        print(f"  {label:<13} {labels[label]:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
