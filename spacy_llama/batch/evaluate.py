"""Scoring a pipeline's llama tasks against a gold set (the ``evaluate`` command).

Gold comes as a .spacy DocBin, or .jsonl with "text", "cats" and "ents" as
[start, end, label] character offsets. Every llama component whose task can score itself
(TextCat: doc.cats; EntityReview and NER: entities over the task's labels) adds its scores.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example

from ..errors import Errors, GoldError, Warnings
from ..pipeline import LlamaPipe
from ..tasks.base import Evaluates, ScoresLabels, Task
from .reader import BadLine, read_lines


def read_gold(path: Path, nlp: Language) -> List[Doc]:
    """Gold docs from a DocBin (.spacy) or from JSONL records. A bad record stops the read
    with its file, line and what to fix (scores over a silently shortened gold set would
    mislead)."""
    if not path.exists():
        raise GoldError(Errors.E040.format(path=str(path)))
    if path.is_dir():
        raise GoldError(Errors.E228.format(path=str(path)))
    if path.suffix == ".spacy":
        return read_gold_docbin(path, nlp)
    if path.suffix != ".jsonl":
        raise GoldError(Errors.E041.format(path=str(path)))
    docs = []
    for item in read_lines(path, name=str(path), jsonl=True):
        if isinstance(item, BadLine):
            raise GoldError(Errors.E220.format(source=item.source, reason=item.reason))
        docs.append(gold_doc(nlp, item.text, item.fields, source=item.source))
    return docs


def read_gold_docbin(path: Path, nlp: Language) -> List[Doc]:
    try:
        return list(DocBin().from_disk(path).get_docs(nlp.vocab))
    except Exception as e:  # msgpack, zlib and spaCy's own errors: not a DocBin
        error = f"{type(e).__name__}: {e}"
        raise GoldError(Errors.E227.format(path=str(path), error=error)) from None


def gold_doc(nlp: Language, text: str, record: Dict[str, Any], *, source: str) -> Doc:
    """One JSONL record -> a Doc with its gold cats and entities, checked field by field."""
    doc = nlp.make_doc(text)
    cats = record.get("cats", {})
    if not isinstance(cats, dict) or not all(_is_number(v) for v in cats.values()):
        raise GoldError(Errors.E221.format(source=source, value=_short(cats)))
    doc.cats = {str(k): float(v) for k, v in cats.items()}
    ents = record.get("ents", [])
    if not isinstance(ents, list):
        raise GoldError(Errors.E222.format(source=source, value=_short(ents)))
    spans = [_gold_span(doc, ent, source) for ent in ents]
    _check_overlaps(spans, source)
    doc.ents = spans
    return doc


def _gold_span(doc: Doc, ent: Any, source: str) -> Span:
    # annotate's own records may carry the span's extension values as a 4th element
    if not isinstance(ent, list) or not (
        len(ent) == 3 or (len(ent) == 4 and isinstance(ent[3], dict))
    ):
        raise GoldError(Errors.E222.format(source=source, value=_short(ent)))
    start, end, label = ent[:3]
    if not (_is_int(start) and _is_int(end) and isinstance(label, str) and label):
        raise GoldError(Errors.E223.format(source=source, entity=_short(ent)))
    n = len(doc.text)
    if not 0 <= start < end <= n:
        raise GoldError(Errors.E224.format(source=source, entity=_short(ent), length=n))
    span = doc.char_span(start, end, label=label)
    if span is None:
        text = doc.text[start:end]
        raise GoldError(Errors.E225.format(source=source, entity=_short(ent), text=text))
    return span


def _check_overlaps(spans: List[Span], source: str) -> None:
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            first = [a.start_char, a.end_char, a.label_]
            second = [b.start_char, b.end_char, b.label_]
            raise GoldError(Errors.E226.format(source=source, first=first, second=second))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def evaluate(nlp: Language, gold: List[Doc], *, batch_size: int = 32) -> Dict[str, Any]:
    """Run ``nlp`` on the gold texts and collect the scores of every self-scoring llama task."""
    predicted = list(nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=batch_size))
    examples = [Example(p, g) for p, g in zip(predicted, gold)]
    scores: Dict[str, Any] = {"n_docs": len(examples)}
    for name, proc in nlp.pipeline:
        task = proc.task if isinstance(proc, LlamaPipe) else None
        if isinstance(task, Evaluates):
            scores.update(task.score(examples))
        missing = never_predicted_labels(task, examples)
        if missing and isinstance(task, ScoresLabels):
            scores.setdefault("llama_never_predicted", {})[name] = missing
            counts = Counter(x for ex in examples for x in _cats_predicted(ex.reference, task))
            warnings.warn(
                "[spacy-llama] "
                + Warnings.W831.format(
                    name=name, labels=missing, n=len(examples),
                    gold={label: counts[label] for label in missing},
                ),
                stacklevel=2,
            )
    return scores


def never_predicted_labels(task: Optional[Task], examples: List[Example]) -> List[str]:
    """The labels of a text classifier (a task that scores label candidates) that no
    predicted doc got (the argmax of an exclusive task, or a score at or above the threshold
    of a multi-label one), where the gold set has at least one doc of that label: a label
    that cannot be reached."""
    if not isinstance(task, ScoresLabels) or not task.labels or not examples:
        return []
    labels = [x.name for x in task.labels]
    predicted = Counter(label for ex in examples for label in _cats_predicted(ex.predicted, task))
    gold = Counter(label for ex in examples for label in _cats_predicted(ex.reference, task))
    return [label for label in labels if predicted[label] == 0 and gold[label] > 0]


def _cats_predicted(doc: Doc, task: ScoresLabels) -> List[str]:
    names = {x.name for x in task.labels}
    cats = {k: v for k, v in doc.cats.items() if k in names}
    if not cats:
        return []
    if task.exclusive:
        return [max(cats, key=lambda k: cats[k])]
    return [k for k, v in cats.items() if v >= task.threshold]


def format_scores(scores: Dict[str, Any]) -> str:
    """Per-label tables for cats and entities, followed by the overall figures."""
    lines: List[str] = [f"documents: {scores.get('n_docs')}"]
    if "cats_f_per_type" in scores:
        lines += ["", "Text classification"]
        lines += _table(scores["cats_f_per_type"])
        lines.append(f"macro F {_pct(scores.get('cats_macro_f'))}")
        lines.append(f"micro F {_pct(scores.get('cats_micro_f'))}")
    if "ents_per_type" in scores:
        lines += ["", "Entities (exact match)"]
        lines += _table(scores["ents_per_type"])
        lines.append(
            f"micro P {_pct(scores.get('ents_p'))}  R {_pct(scores.get('ents_r'))}  "
            f"F {_pct(scores.get('ents_f'))}"
        )
    if scores.get("llama_review_acc") is not None:
        lines.append(
            f"review label accuracy on exact-match spans: {_pct(scores['llama_review_acc'])} "
            f"(n={scores['llama_review_n']})"
        )
    for name, missing in scores.get("llama_never_predicted", {}).items():
        lines.append(f"never predicted by {name}: {', '.join(missing)}")
    if scores.get("llama_perplexity") is not None:
        lines.append(f"mean perplexity: {scores['llama_perplexity']:.2f}")
    return "\n".join(lines)


def _table(per_type: Dict[str, Dict[str, float]]) -> List[str]:
    rows = [f"{'label':<16}{'P':>8}{'R':>8}{'F':>8}"]
    for label in sorted(per_type):
        v = per_type[label]
        rows.append(f"{label:<16}{_pct(v['p']):>8}{_pct(v['r']):>8}{_pct(v['f']):>8}")
    return rows


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
