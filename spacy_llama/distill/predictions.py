"""A teacher's annotation of one document, as the later steps need it: its id and text, the
task's labels (``doc.cats``, or the spans of the task's labels with ``span._.llama_score``),
and one confidence for the document.

A document's confidence is that of its least sure prediction: for an exclusive textcat the
top probability; for a multi-label one the least decided label (``max(p, 1 - p)``); for spans
the lowest span score. A document with no scored span (no entity found) counts as sure (1.0):
the queue is for the answers the model hesitated over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from spacy.tokens import Doc, Span

from ..batch.reader import ID_KEY
from ..tasks.confidence import SCORE_ATTR
from .teacher import Teacher

SpanLabel = Tuple[int, int, str, Optional[float]]  # start_char, end_char, label, score


@dataclass
class Prediction:
    id: str
    text: str
    cats: Dict[str, float] = field(default_factory=dict)
    spans: List[SpanLabel] = field(default_factory=list)
    confidence: float = 1.0

    def labels(self, teacher: Teacher) -> List[str]:
        """The labels predicted (textcat: the chosen ones)."""
        if teacher.kind == "textcat":
            return chosen_cats(self.cats, exclusive=teacher.exclusive)
        return [s[2] for s in self.spans]


def chosen_cats(cats: Dict[str, float], *, exclusive: bool) -> List[str]:
    if not cats:
        return []
    if exclusive:
        return [max(cats, key=lambda k: cats[k])]
    return [k for k, v in cats.items() if v >= 0.5]


def task_spans(doc: Doc, teacher: Teacher) -> List[Span]:
    """The spans of the teacher's task in ``doc`` (doc.spans[key], else doc.ents), of its
    labels only (upstream entities of other labels are not the task's)."""
    key = teacher.spans_key
    found = list(doc.spans[key]) if key is not None and key in doc.spans else list(doc.ents)
    wanted = set(teacher.labels)
    return [s for s in found if s.label_ in wanted]


def span_score(span: Span, teacher: Teacher) -> Optional[float]:
    """``span._.llama_score``; for EntityReview, the probability it gave the span's label."""
    attr = teacher.label_probs_attr
    if attr is not None and Span.has_extension(attr):
        probs = span._.get(attr) or {}
        return float(probs[span.label_]) if span.label_ in probs else None
    if not Span.has_extension(SCORE_ATTR):
        return None
    value = span._.get(SCORE_ATTR)
    return float(value) if value is not None else None


def prediction(doc: Doc, teacher: Teacher) -> Prediction:
    doc_id = str(doc.user_data.get(ID_KEY, "")) if doc.user_data else ""
    pred = Prediction(id=doc_id, text=doc.text)
    if teacher.kind == "textcat":
        pred.cats = {k: float(v) for k, v in doc.cats.items() if k in teacher.labels}
    else:
        pred.spans = [
            (s.start_char, s.end_char, s.label_, span_score(s, teacher))
            for s in task_spans(doc, teacher)
        ]
    pred.confidence = confidence(pred, teacher)
    return pred


def confidence(pred: Prediction, teacher: Teacher) -> float:
    if teacher.kind == "textcat":
        if not pred.cats:
            return 0.0
        values = list(pred.cats.values())
        if teacher.exclusive:
            return max(values)
        return min(max(v, 1.0 - v) for v in values)
    scores = [s[3] for s in pred.spans if s[3] is not None]
    return min(scores) if scores else 1.0


def to_json(pred: Prediction) -> Dict[str, Any]:
    return {
        "id": pred.id,
        "text": pred.text,
        "cats": pred.cats,
        "spans": [list(s) for s in pred.spans],
        "confidence": pred.confidence,
    }


def from_json(data: Dict[str, Any]) -> Prediction:
    return Prediction(
        id=str(data["id"]),
        text=data["text"],
        cats={str(k): float(v) for k, v in data.get("cats", {}).items()},
        spans=[
            (int(a), int(b), str(c), None if d is None else float(d))
            for a, b, c, d in data.get("spans", [])
        ],
        confidence=float(data.get("confidence", 1.0)),
    )
