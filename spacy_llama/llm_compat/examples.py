"""spacy-llm's few-shot files, rewritten in the formats of this project's tasks.

spacy-llm's ``spacy.FewShotReader.v1`` reads .yml/.yaml/.json/.jsonl; each task has its own
record shape. The translator writes the converted records as JSONL next to the new config
and points ``spacy-llama.FewShotReader.v1`` at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly

from ..errors import CompatError, Errors

Record = Dict[str, Any]


def read_examples(path: Path, where: str) -> List[Record]:
    """The records of a spacy-llm examples file (any of its reader's formats)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            data: Any = list(srsly.read_jsonl(path))
        elif suffix == ".json":
            data = srsly.read_json(path)
        elif suffix in (".yml", ".yaml"):
            data = srsly.read_yaml(path)
        else:
            raise ValueError("spacy-llm reads .yml, .yaml, .json or .jsonl")
    except (OSError, ValueError) as e:
        raise CompatError(Errors.E754.format(where=where, path=path, error=e)) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise CompatError(Errors.E754.format(where=where, path=path, error="not a list of records"))
    return data


def entity_examples(records: List[Record], where: str, path: Path) -> List[Record]:
    """NER/SpanCat records, v1/v2 (``entities``: label -> texts) or v3 (``spans``: text,
    is_entity, label, reason; spans that are not entities are left out), as
    ``{"text", "entities": [{"text", "label"}]}`` in text order."""
    out = []
    for i, rec in enumerate(records):
        text = _text(rec, i, where, path)
        ents: List[Record] = []
        if isinstance(rec.get("entities"), dict):
            for label, texts in rec["entities"].items():
                ents.extend({"text": str(t), "label": str(label)} for t in texts or [])
        elif isinstance(rec.get("spans"), list):
            ents = [
                {"text": str(s["text"]), "label": str(s["label"])}
                for s in rec["spans"]
                if isinstance(s, dict) and s.get("is_entity", True)
            ]
        else:
            raise CompatError(
                Errors.E754.format(
                    where=where, path=path, error=f"record {i} has no 'entities' or 'spans'"
                )
            )
        ents.sort(key=lambda e: _position(text, e["text"]))
        out.append({"text": text, "entities": ents})
    return out


def textcat_examples(
    records: List[Record], where: str, path: Path, *, labels: List[str], binary: bool
) -> List[Record]:
    """TextCat records (``answer``: a label, labels joined by commas, or POS/NEG for one
    label) as ``{"text", "labels": [...]}``."""
    out = []
    for i, rec in enumerate(records):
        text = _text(rec, i, where, path)
        answer = str(rec.get("answer", "")).strip()
        if binary:
            names = list(labels[:1]) if answer.upper() == "POS" else []
        else:
            names = [a.strip() for a in answer.split(",") if a.strip()]
        out.append({"text": text, "labels": names})
    return out


def _text(rec: Record, i: int, where: str, path: Path) -> str:
    text = rec.get("text")
    if not isinstance(text, str):
        raise CompatError(
            Errors.E754.format(where=where, path=path, error=f"record {i} has no text")
        )
    return text


def _position(text: str, needle: str) -> int:
    at = text.find(needle)
    return at if at >= 0 else len(text)


def write_examples(path: Path, records: List[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_jsonl(path, records)


def examples_path(block: Any) -> Optional[str]:
    """The file a spacy-llm examples block reads (``spacy.FewShotReader.v1``'s ``path``)."""
    if isinstance(block, dict) and "path" in block:
        return str(block["path"])
    return None
