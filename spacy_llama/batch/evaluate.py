"""Scoring a pipeline's llama tasks against a gold set (the ``evaluate`` command).

Gold comes as a .spacy DocBin, or .jsonl with "text", "cats" and "ents" as
[start, end, label] character offsets. Every llama component whose task can score itself
(TextCat: doc.cats; EntityReview and NER: entities over the task's labels) adds its scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from ..errors import Errors, GoldError


def read_gold(path: Path, nlp: Language) -> List[Doc]:
    """Gold docs from a DocBin (.spacy) or from JSONL records."""
    if not path.exists():
        raise GoldError(Errors.E040.format(path=str(path)))
    if path.suffix == ".spacy":
        return list(DocBin().from_disk(path).get_docs(nlp.vocab))
    if path.suffix != ".jsonl":
        raise GoldError(Errors.E041.format(path=str(path)))
    docs = []
    for i, rec in enumerate(srsly.read_jsonl(path)):
        doc = nlp.make_doc(rec["text"])
        doc.cats = dict(rec.get("cats", {}))
        spans = [doc.char_span(s, e, label=lab) for s, e, lab in rec.get("ents", [])]
        if any(s is None for s in spans):
            raise GoldError(Errors.E042.format(index=i, path=str(path)))
        doc.ents = spans  # type: ignore[assignment]
        docs.append(doc)
    return docs


def evaluate(nlp: Language, gold: List[Doc], *, batch_size: int = 32) -> Dict[str, Any]:
    """Run ``nlp`` on the gold texts and collect the scores of every self-scoring llama task."""
    predicted = list(nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=batch_size))
    examples = [Example(p, g) for p, g in zip(predicted, gold)]
    scores: Dict[str, Any] = {"n_docs": len(examples)}
    for _, proc in nlp.pipeline:
        score = getattr(getattr(proc, "task", None), "score", None)
        if score is not None:
            scores.update(score(examples))
    return scores


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
