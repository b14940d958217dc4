"""What the entity tasks (EntityReview, generative NER) learn from: the reference doc's
entities, checked before the first step. The gold each task is trained on is the task's
own (``ReviewsEntities.review_targets``, ``GeneratesEntities.gold_answer``)."""

from __future__ import annotations

from typing import Iterable, Set, Union

from spacy.training import Example

from ..errors import Errors, TrainingError
from ..tasks.base import GeneratesEntities, ReviewsEntities, Task

EntityTask = Union[ReviewsEntities, GeneratesEntities]


def check_entities(name: str, task: Task, eg: Example, where: str) -> None:
    """The reference doc must say which entities it has (``doc.ents = []`` says none)."""
    if not eg.reference.has_annotation("ENT_IOB"):
        raise TrainingError(Errors.E535.format(name=name, task=type(task).__name__, where=where))


def check_entity_labels(name: str, task: EntityTask, examples: Iterable[Example]) -> None:
    """At least one gold entity must carry a label of the task: otherwise the labels are
    probably named differently from the data's (PER vs PERSON)."""
    wanted = set(task.entity_labels)
    found: Set[str] = {e.label_ for eg in examples for e in eg.reference.ents}
    if not wanted & found:
        raise TrainingError(
            Errors.E536.format(
                name=name, task=type(task).__name__, labels=sorted(wanted), found=sorted(found)
            )
        )
