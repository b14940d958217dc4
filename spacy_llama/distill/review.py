"""Step 2: the review queue. The least confident ``fraction`` of the documents, rarest
predicted label first among documents of equal confidence, written for the two annotation
tools people use:

- ``review.jsonl``: Prodigy's task format, which ``prodigy textcat.manual`` / ``ner.manual`` /
  ``spans.manual`` open as pre-annotated tasks: ``text``, ``tokens``, ``spans`` (``start``,
  ``end``, ``token_start``, ``token_end`` inclusive, ``label``, ``score``), or ``options`` +
  ``accept`` for textcat, and ``meta`` with the doc ``id`` and its ``score``;
- ``review.label-studio.json``: Label Studio tasks with ``predictions`` (pre-annotations, with
  the document's and each region's score), and ``review.label-studio.xml``, the labelling
  config they are written for (``<Labels>`` or ``<Choices>`` named ``label``, ``<Text>``
  named ``text``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence
from xml.sax.saxutils import quoteattr

import spacy

from ..batch.files import write_atomic
from .predictions import Prediction
from .teacher import Teacher

FROM_NAME, TO_NAME = "label", "text"


def select_queue(
    preds: Sequence[Prediction], teacher: Teacher, fraction: float
) -> List[Prediction]:
    """The ``ceil(fraction * n)`` least confident documents; among equals, the one whose
    rarest predicted label is rarest first (then by id, so the queue is deterministic)."""
    counts = Counter(label for p in preds for label in p.labels(teacher))

    def rarity(p: Prediction) -> int:
        found = [counts[label] for label in p.labels(teacher)]
        return min(found) if found else len(preds) + 1

    ranked = sorted(preds, key=lambda p: (p.confidence, rarity(p), p.id))
    return ranked[: math.ceil(fraction * len(preds))] if fraction > 0 else []


def prodigy_task(pred: Prediction, teacher: Teacher, tokenizer: Any) -> Dict[str, Any]:
    doc = tokenizer(pred.text)
    tokens = [
        {
            "text": t.text,
            "start": t.idx,
            "end": t.idx + len(t),
            "id": t.i,
            "ws": bool(t.whitespace_),
        }
        for t in doc
    ]
    task: Dict[str, Any] = {"text": pred.text, "tokens": tokens}
    if teacher.kind == "textcat":
        task["options"] = [{"id": label, "text": label} for label in teacher.labels]
        task["accept"] = pred.labels(teacher)
        task["config"] = {"choice_style": "single" if teacher.exclusive else "multiple"}
    else:
        spans = []
        for start, end, label, score in pred.spans:
            span = doc.char_span(start, end)
            item: Dict[str, Any] = {"start": start, "end": end, "label": label}
            if span is not None:
                item.update(token_start=span.start, token_end=span.end - 1)
            if score is not None:
                item["score"] = score
            spans.append(item)
        task["spans"] = spans
    task["meta"] = {"id": pred.id, "score": pred.confidence}
    return task


def label_studio_task(pred: Prediction, teacher: Teacher) -> Dict[str, Any]:
    result: List[Dict[str, Any]] = []
    if teacher.kind == "textcat":
        result.append(
            {
                "id": f"{pred.id}-cats",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": pred.labels(teacher)},
            }
        )
    else:
        for k, (start, end, label, score) in enumerate(pred.spans):
            region: Dict[str, Any] = {
                "id": f"{pred.id}-{k}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "labels",
                "value": {
                    "start": start,
                    "end": end,
                    "text": pred.text[start:end],
                    "labels": [label],
                },
            }
            if score is not None:
                region["score"] = score
            result.append(region)
    return {
        "data": {"id": pred.id, "text": pred.text},
        "predictions": [
            {"model_version": "spacy-llama teacher", "score": pred.confidence, "result": result}
        ],
    }


def label_studio_config(teacher: Teacher) -> str:
    """The labelling config the pre-annotations are written for."""
    if teacher.kind == "textcat":
        choice = "single" if teacher.exclusive else "multiple"
        items = "".join(f"    <Choice value={quoteattr(x)}/>\n" for x in teacher.labels)
        control = (
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{choice}">\n'
            f"{items}  </Choices>\n"
        )
    else:
        items = "".join(f"    <Label value={quoteattr(x)}/>\n" for x in teacher.labels)
        control = f'  <Labels name="{FROM_NAME}" toName="{TO_NAME}">\n{items}  </Labels>\n'
    return f'<View>\n{control}  <Text name="{TO_NAME}" value="$text"/>\n</View>\n'


def write_queue(queue: Sequence[Prediction], teacher: Teacher, out_dir: Path) -> None:
    """review.jsonl and review.label-studio.json, each written whole or not at all."""
    tokenizer = spacy.blank("en").tokenizer
    lines = [json.dumps(prodigy_task(p, teacher, tokenizer), ensure_ascii=False) for p in queue]
    write_atomic(out_dir / "review.jsonl", "".join(x + "\n" for x in lines).encode("utf-8"))
    tasks = [label_studio_task(p, teacher) for p in queue]
    data = json.dumps(tasks, ensure_ascii=False, indent=1).encode("utf-8")
    write_atomic(out_dir / "review.label-studio.json", data)
    config = label_studio_config(teacher).encode("utf-8")
    write_atomic(out_dir / "review.label-studio.xml", config)
