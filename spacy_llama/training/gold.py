"""What each trainable task needs from the training data, checked before the first step
(``initialize``): a message naming the task, the attribute and the right format."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from spacy.training import Example

from ..errors import Errors, TrainingError
from .entity_gold import check_entities, check_entity_labels, is_entity_task


def is_textcat(task: Any) -> bool:
    return all(hasattr(task, a) for a in ("labels", "exclusive", "candidates", "length_normalize"))


def answer_attr(task: Any) -> Optional[str]:
    """The doc extension holding the answer a generating task is trained on."""
    for attr in ("summary_attr", "completion_attr"):
        if isinstance(getattr(task, attr, None), str):
            return str(getattr(task, attr))
    return None


def trainable(task: Any) -> bool:
    return is_textcat(task) or is_entity_task(task) or answer_attr(task) is not None


def usable(eg: Example) -> bool:
    """Empty docs are skipped: they have nothing to condition on."""
    return bool(eg.predicted.text.strip())


def check_examples(name: str, task: Any, examples: Iterable[Example]) -> int:
    """Raise on the first example without what the task learns from; return how many
    usable examples there are (at least one)."""
    kept = []
    for i, eg in enumerate(examples):
        if not usable(eg):
            continue
        where = f"training example {i} ({eg.predicted.text[:40]!r})"
        if is_textcat(task):
            _check_cats(name, task, eg, where)
        elif is_entity_task(task):
            check_entities(name, task, eg, where)
        else:
            _check_answer(name, task, eg, where)
        kept.append(eg)
    if not kept:
        raise TrainingError(Errors.E505.format(name=name, task=type(task).__name__))
    if is_entity_task(task):
        check_entity_labels(name, task, kept)
    return len(kept)


def check_gold_cats(name: str, task: Any, examples: Iterable[Example]) -> None:
    """Every gold cat of a textcat task's examples is a number in [0, 1] for one of its
    labels (run on each update's batch as well as in initialize: a NaN or a 7 would train
    silently on nonsense, an unknown label would be ignored)."""
    if not is_textcat(task) or not task.labels:  # labels from the data: not taken yet
        return
    for i, eg in enumerate(examples):
        if usable(eg):
            where = f"training example {i} ({eg.predicted.text[:40]!r})"
            _check_cat_values(name, task, eg, where)
            _check_known_labels(name, task, eg, where)


def _check_cat_values(name: str, task: Any, eg: Example, where: str) -> None:
    kind = type(task).__name__
    for label, value in eg.reference.cats.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise TrainingError(
                Errors.E615.format(name=name, task=kind, where=where, label=label, value=value)
            )


def _check_known_labels(name: str, task: Any, eg: Example, where: str) -> None:
    names = [x.name for x in task.labels]
    kind = type(task).__name__
    unknown = sorted(str(k) for k in eg.reference.cats if k not in names)
    if unknown:
        raise TrainingError(
            Errors.E616.format(name=name, task=kind, where=where, unknown=unknown, labels=names)
        )


def _check_cats(name: str, task: Any, eg: Example, where: str) -> None:
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


def _check_answer(name: str, task: Any, eg: Example, where: str) -> None:
    attr = str(answer_attr(task))
    value = eg.reference._.get(attr) if eg.reference.has_extension(attr) else None
    if not isinstance(value, str) or not value.strip():
        raise TrainingError(
            Errors.E508.format(name=name, task=type(task).__name__, where=where, attr=attr)
        )
