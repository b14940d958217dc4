"""What each trainable task needs from the training data, checked before the first step
(``initialize``): a message naming the task, the attribute and the right format."""

from __future__ import annotations

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


def _check_cats(name: str, task: Any, eg: Example, where: str) -> None:
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


def _check_answer(name: str, task: Any, eg: Example, where: str) -> None:
    attr = str(answer_attr(task))
    value = eg.reference._.get(attr) if eg.reference.has_extension(attr) else None
    if not isinstance(value, str) or not value.strip():
        raise TrainingError(
            Errors.E508.format(name=name, task=type(task).__name__, where=where, attr=attr)
        )
