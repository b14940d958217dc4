"""Corrections of the review queue, read back: a Prodigy ``db-out`` JSONL or a Label Studio
JSON export. Each corrected document is matched to the queue by its id (``meta.id`` /
``data.id``) and must have the queue's text; a mismatch stops the run with the line (or task
number) and the reason, before anything is trained. A corrected document's labels replace
the teacher's; a Prodigy ``reject`` drops the document from the training data, ``ignore``
keeps the teacher's labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import DistillError, Errors
from .predictions import Prediction
from .teacher import Teacher

DROPPED = "reject"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_corrections(
    path: Path, queue: List[Prediction], teacher: Teacher
) -> Dict[str, Optional[Prediction]]:
    """Doc id -> the corrected prediction (confidence 1.0), or None for a rejected doc."""
    by_id = {p.id: p for p in queue}
    out: Dict[str, Optional[Prediction]] = {}
    for where, entry in _entries(path):
        doc_id, text, labels = entry
        if doc_id is None or doc_id not in by_id:
            reason = (
                "it has no document id" if doc_id is None else f"id {doc_id!r} is not in the queue"
            )
            raise DistillError(Errors.E704.format(path=path, where=where, reason=reason))
        queued = by_id[doc_id]
        if text != queued.text:
            reason = (
                f"its text differs from the queued text of {doc_id!r} ({_diff(text, queued.text)})"
            )
            raise DistillError(Errors.E704.format(path=path, where=where, reason=reason))
        if labels == DROPPED:
            out[doc_id] = None
        elif labels is not None:
            out[doc_id] = _corrected(queued, labels, teacher, path, where)
    return out


def _diff(got: Optional[str], want: str) -> str:
    if got is None:
        return "it has no text"
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"first difference at character {at}: {got[at : at + 20]!r} vs {want[at : at + 20]!r}"


def _corrected(
    queued: Prediction, labels: Any, teacher: Teacher, path: Path, where: str
) -> Prediction:
    fixed = Prediction(id=queued.id, text=queued.text, confidence=1.0)
    if teacher.kind == "textcat":
        unknown = [x for x in labels if x not in teacher.labels]
        if unknown:
            reason = f"unknown label(s) {unknown} (the task's: {teacher.labels})"
            raise DistillError(Errors.E704.format(path=path, where=where, reason=reason))
        fixed.cats = {x: float(x in labels) for x in teacher.labels}
        return fixed
    for start, end, label in labels:
        if label not in teacher.labels:
            reason = f"unknown label {label!r} (the task's: {teacher.labels})"
            raise DistillError(Errors.E704.format(path=path, where=where, reason=reason))
        if not (0 <= start < end <= len(queued.text)):
            reason = f"span [{start}, {end}] is outside the text"
            raise DistillError(Errors.E704.format(path=path, where=where, reason=reason))
        fixed.spans.append((start, end, label, 1.0))
    fixed.spans.sort()
    return fixed


Entry = Tuple[Optional[str], Optional[str], Any]  # id, text, labels (None: keep; DROPPED)


def _entries(path: Path) -> Iterator[Tuple[str, Entry]]:
    raw = path.read_text(encoding="utf-8")
    stripped = raw.lstrip()
    if stripped.startswith("["):
        try:
            tasks = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DistillError(Errors.E705.format(path=path, reason=str(e))) from None
        for k, task in enumerate(tasks, 1):
            yield f"task {k}", _label_studio(task, path, f"task {k}")
        return
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DistillError(Errors.E705.format(path=path, reason=f"line {n}: {e}")) from None
        if not isinstance(record, dict):
            raise DistillError(Errors.E705.format(path=path, reason=f"line {n} is not an object"))
        yield f"line {n}", _prodigy(record)


def _prodigy(record: Dict[str, Any]) -> Entry:
    meta = record.get("meta") or {}
    doc_id = meta.get("id")
    answer = record.get("answer", "accept")
    if answer == "reject":
        return (None if doc_id is None else str(doc_id), record.get("text"), DROPPED)
    if answer == "ignore":
        return (None if doc_id is None else str(doc_id), record.get("text"), None)
    if "accept" in record and "options" in record:
        labels: Any = [str(x) for x in record["accept"]]
    else:
        labels = [
            (int(s["start"]), int(s["end"]), str(s["label"])) for s in record.get("spans", [])
        ]
    return (None if doc_id is None else str(doc_id), record.get("text"), labels)


def _label_studio(record: Any, path: Path, where: str) -> Entry:
    """One Label Studio task (its export's name for a record): data, annotations."""
    if not isinstance(record, dict) or "data" not in record:
        raise DistillError(Errors.E705.format(path=path, reason=f"{where} has no data"))
    data = record["data"]
    doc_id = data.get("id")
    done = [a for a in record.get("annotations", []) if not a.get("was_cancelled")]
    if not done:  # not reviewed: the teacher's labels stay
        return (None if doc_id is None else str(doc_id), data.get("text"), None)
    labels: List[Any] = []
    choices: List[str] = []
    is_choice = False
    for region in done[-1].get("result", []):
        value = region.get("value", {})
        if region.get("type") == "choices":
            is_choice = True
            choices.extend(str(x) for x in value.get("choices", []))
        elif "start" in value and "end" in value:
            for label in value.get("labels", []):
                labels.append((int(value["start"]), int(value["end"]), str(label)))
    return (
        None if doc_id is None else str(doc_id),
        data.get("text"),
        choices if is_choice else labels,
    )


def apply_corrections(
    preds: List[Prediction], corrections: Dict[str, Optional[Prediction]]
) -> List[Prediction]:
    out = []
    for p in preds:
        if p.id not in corrections:
            out.append(p)
        elif corrections[p.id] is not None:
            out.append(corrections[p.id])  # type: ignore[arg-type]
    return out
