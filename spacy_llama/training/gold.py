"""What each trainable task needs from the training data, checked before the first step
(``initialize``) and on each update's batch: a message naming the task, the attribute and
the right format. Which checks a task gets is the capability table's business
(``capabilities.py``); these functions are its rows' checks."""

from __future__ import annotations

import math
from typing import Iterable

from spacy.training import Example

from ..errors import Errors, TrainingError
from ..tasks.base import GeneratesAnswer, ScoresLabels


def usable(eg: Example) -> bool:
    """Empty docs are skipped: they have nothing to condition on."""
    return bool(eg.predicted.text.strip())


def check_gold_cats(name: str, task: ScoresLabels, examples: Iterable[Example]) -> None:
    """Every gold cat of the examples is a number in [0, 1] for one of the task's labels
    (run on each update's batch as well as in initialize: a NaN or a 7 would train
    silently on nonsense, an unknown label would be ignored)."""
    if not task.labels:  # labels from the data: not taken yet
        return
    for i, eg in enumerate(examples):
        if usable(eg):
            where = f"training example {i} ({eg.predicted.text[:40]!r})"
            _check_cat_values(name, task, eg, where)
            _check_known_labels(name, task, eg, where)


def _check_cat_values(name: str, task: ScoresLabels, eg: Example, where: str) -> None:
    kind = type(task).__name__
    for label, value in eg.reference.cats.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise TrainingError(
                Errors.E615.format(name=name, task=kind, where=where, label=label, value=value)
            )


def _check_known_labels(name: str, task: ScoresLabels, eg: Example, where: str) -> None:
    names = [x.name for x in task.labels]
    kind = type(task).__name__
    unknown = sorted(str(k) for k in eg.reference.cats if k not in names)
    if unknown:
        raise TrainingError(
            Errors.E616.format(name=name, task=kind, where=where, unknown=unknown, labels=names)
        )


def check_cats(name: str, task: ScoresLabels, eg: Example, where: str) -> None:
    """The reference doc has gold cats for the task's labels (exactly one on when the
    task is exclusive)."""
    _check_cat_values(name, task, eg, where)
    names = [x.name for x in task.labels]
    cats = {k: v for k, v in eg.reference.cats.items() if k in names}
    if not cats:
        example = {n: float(j == 0) for j, n in enumerate(names)}
        raise TrainingError(
            Errors.E506.format(
                name=name,
                task=type(task).__name__,
                where=where,
                attr="doc.cats",
                labels=names,
                found=dict(eg.reference.cats) or "no cats",
                example=example,
            )
        )
    on = [k for k, v in cats.items() if v >= 0.5]
    if task.exclusive and len(on) != 1:
        raise TrainingError(
            Errors.E507.format(
                name=name, task=type(task).__name__, where=where, count=len(on), cats=cats
            )
        )
    _check_known_labels(name, task, eg, where)


def check_answer(name: str, task: GeneratesAnswer, eg: Example, where: str) -> None:
    """The reference doc holds a non-empty answer in ``doc._.<answer_attr>``."""
    attr = task.answer_attr
    value = eg.reference._.get(attr) if eg.reference.has_extension(attr) else None
    if not isinstance(value, str) or not value.strip():
        raise TrainingError(
            Errors.E508.format(name=name, task=type(task).__name__, where=where, attr=attr)
        )
