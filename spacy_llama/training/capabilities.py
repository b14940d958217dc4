"""The one table of training: per task capability (tasks/base.py), how the gold of a
training example is checked, where the labels of a task built with ``labels = []`` come
from, and the loss that trains it.

The component (pipeline.py) and the adapter ask this table about a task, through
:func:`training_for`; nothing in training asks a task for an attribute name or calls its
private methods. A task implementing none of the capabilities cannot be trained (E503);
one implementing several is ambiguous (E962). A custom task is trainable by implementing
one of them: no change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from spacy.tokens import Doc
from spacy.training import Example

from ..errors import Errors, TrainingError
from ..models.base import LoadedModel
from ..tasks.base import (
    GeneratesAnswer,
    GeneratesEntities,
    ReviewsEntities,
    ScoresLabels,
    Task,
)
from .entity_gold import check_entities, check_entity_labels
from .entity_losses import review_loss
from .gold import check_answer, check_cats, check_gold_cats, usable
from .losses import answer_loss, textcat_loss

# (component name, task, example, where) -> raises on a bad gold
Check = Callable[..., None]
# (task, lm, peft module, usable examples, batch_size=, share_prompt=) -> loss or None
Loss = Callable[..., Optional[torch.Tensor]]


@dataclass(frozen=True)
class Training:
    """How a task of ``capability`` is trained."""

    capability: type
    check: Check  # each usable example's gold
    loss: Loss
    check_all: Optional[Check] = None  # (name, task, usable examples): after ``check``
    check_batch: Optional[Check] = None  # (name, task, examples): every update's batch
    # The labels one gold doc shows, for a task built with ``labels = []``; the error when
    # no training doc shows any.
    gold_labels: Optional[Callable[..., Set[str]]] = None
    no_labels: str = ""
    example_labels: Tuple[str, ...] = ()  # labels = [...] in E530's message


def _cat_labels(task: ScoresLabels, reference: Doc) -> Set[str]:
    return {str(k) for k in reference.cats}


def _entity_labels(task: GeneratesEntities, reference: Doc) -> Set[str]:
    return {e.label_ for e in reference.ents} - {""}


def _reviewed_labels(task: ReviewsEntities, reference: Doc) -> Set[str]:
    return {e.label_ for e in reference.ents} - {task.none_label or ""}


TABLE: Tuple[Training, ...] = (
    Training(
        ScoresLabels,
        check=check_cats,
        loss=textcat_loss,
        check_batch=check_gold_cats,
        gold_labels=_cat_labels,
        no_labels=Errors.E533,
        example_labels=("sport", "politics"),
    ),
    Training(
        ReviewsEntities,
        check=check_entities,
        loss=review_loss,
        check_all=check_entity_labels,
        gold_labels=_reviewed_labels,
        no_labels=Errors.E534,
        example_labels=("PERSON", "ORG"),
    ),
    Training(
        GeneratesEntities,
        check=check_entities,
        loss=answer_loss,
        check_all=check_entity_labels,
        gold_labels=_entity_labels,
        no_labels=Errors.E534,
        example_labels=("PERSON", "ORG"),
    ),
    Training(GeneratesAnswer, check=check_answer, loss=answer_loss),
)


def capabilities_of(task: Task) -> List[Training]:
    """The rows of the table ``task`` implements (the shipped tasks: one each)."""
    return [row for row in TABLE if isinstance(task, row.capability)]


def trainable(task: Task) -> bool:
    return len(capabilities_of(task)) == 1


def training_for(task: Task, name: str = "llama") -> Training:
    """The one row that trains ``task`` (``name``: the component, for the messages)."""
    rows = capabilities_of(task)
    if not rows:
        raise TrainingError(Errors.E503.format(name=name, task=type(task).__name__))
    if len(rows) > 1:
        found = ", ".join(row.capability.__name__ for row in rows)
        raise TrainingError(
            Errors.E962.format(name=name, task=type(task).__name__, capabilities=found)
        )
    return rows[0]


def example_labels(task: Task) -> List[str]:
    """Labels to show in a message asking for ``labels = [...]``."""
    rows = capabilities_of(task)
    if rows and rows[0].example_labels:
        return list(rows[0].example_labels)
    return ["sport", "politics"]


def check_examples(name: str, task: Task, examples: Iterable[Example]) -> int:
    """Raise on the first example without what the task learns from; return how many
    usable examples there are (at least one)."""
    row = training_for(task, name)
    kept = []
    for i, eg in enumerate(examples):
        if not usable(eg):
            continue
        row.check(name, task, eg, f"training example {i} ({eg.predicted.text[:40]!r})")
        kept.append(eg)
    if not kept:
        raise TrainingError(Errors.E505.format(name=name, task=type(task).__name__))
    if row.check_all is not None:
        row.check_all(name, task, kept)
    return len(kept)


def check_batch(name: str, task: Task, examples: Sequence[Example]) -> None:
    """The checks every update's batch gets (a NaN or a 7 in doc.cats must not train)."""
    row = training_for(task, name)
    if row.check_batch is not None:
        row.check_batch(name, task, examples)


def labels_from_data(name: str, task: Task, examples: Iterable[Example]) -> List[str]:
    """The labels of a task built with ``labels = []``, from the training data, as spaCy's
    ``textcat`` takes them: the keys of the reference docs' ``cats`` (ScoresLabels), or the
    labels of their entities (the entity capabilities). Sorted, so the prompt does not
    depend on the order of the corpus."""
    row = training_for(task, name)
    if row.gold_labels is None:
        return []
    found: Set[str] = set()
    for eg in examples:
        if usable(eg):
            found |= row.gold_labels(task, eg.reference)
    if not found:
        raise TrainingError(row.no_labels.format(name=name, task=type(task).__name__))
    return sorted(found)


def task_loss(
    task: Task,
    lm: LoadedModel,
    module: torch.nn.Module,
    examples: Iterable[Example],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
    name: str = "llama",
) -> Tuple[Optional[torch.Tensor], int]:
    """The summed loss of the usable examples (empty docs skipped) and how many there were.
    ``batch_size``: rows per forward (None: all at once); ``share_prompt``: run the prefix
    all requests share once."""
    row = training_for(task, name)
    egs = [eg for eg in examples if usable(eg)]
    if not egs:
        return None, 0
    loss = row.loss(task, lm, module, egs, batch_size=batch_size, share_prompt=share_prompt)
    return loss, len(egs)
