"""Labels with verbalizers and definitions, and the probabilities tasks derive from
their scores."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

from ..errors import Errors, FewShotError


@dataclass(frozen=True)
class Label:
    name: str  # what is written to doc.cats / ent.label_
    answer: str  # what the model is asked to say (the verbalizer)
    definition: str = ""


def make_labels(
    labels: Sequence[str],
    *,
    verbalizers: Dict[str, str],
    definitions: Dict[str, str],
) -> List[Label]:
    """Validate the label config: non-empty, unique, and no stray verbalizer or definition."""
    if not labels:
        raise FewShotError(Errors.E310)
    if len(set(labels)) != len(labels) or any(not str(x).strip() for x in labels):
        raise FewShotError(Errors.E311.format(labels=list(labels)))
    for what, table in (("verbalizers", verbalizers), ("label_definitions", definitions)):
        stray = sorted(set(table) - set(labels))
        if stray:
            raise FewShotError(Errors.E312.format(what=what, stray=stray, labels=labels))
    out = [Label(x, verbalizers.get(x, x), definitions.get(x, "")) for x in labels]
    answers = [x.answer for x in out]
    if len(set(answers)) != len(answers):
        raise FewShotError(Errors.E313.format(answers=answers))
    return out


def config_labels(
    labels: Sequence[str], verbalizers: Dict[str, str], definitions: Dict[str, str]
) -> List[Label]:
    """The config's labels; none (``labels = []``) means they come from the training data,
    which the component allows only with an adapter block (the verbalizers and definitions
    are checked once the labels are known)."""
    if not labels:
        return []
    return make_labels(labels, verbalizers=verbalizers, definitions=definitions)


def labels_context(labels: Sequence[Label]) -> List[Dict[str, str]]:
    return [asdict(x) for x in labels]


def check_label(label: Any, known: Dict[str, Label], where: str) -> Label:
    if label not in known:
        raise FewShotError(Errors.E314.format(label=label, where=where, known=sorted(known)))
    return known[label]


def softmax(values: Sequence[float]) -> List[float]:
    """Probabilities from log-likelihoods (shifted by the maximum: no overflow)."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]
