"""The labels a task built with ``labels = []`` takes from the training data in
``initialize``, as spaCy's ``textcat`` does: the keys of the reference docs' ``cats``
(TextCat), or the labels of their entities (EntityReview, NER). Sorted, so the prompt does
not depend on the order of the corpus."""

from __future__ import annotations

from typing import Any, Iterable, List, Set

from spacy.training import Example

from ..errors import Errors, TrainingError
from .entity_gold import is_entity_task
from .gold import is_textcat, usable


def needs_labels(task: Any) -> bool:
    return bool(getattr(task, "needs_labels", False))


def labels_from_data(name: str, task: Any, examples: Iterable[Example]) -> List[str]:
    egs = [eg for eg in examples if usable(eg)]
    found: Set[str] = set()
    if is_textcat(task):
        found = {str(k) for eg in egs for k in eg.reference.cats}
        code = Errors.E533
    elif is_entity_task(task):
        found = {e.label_ for eg in egs for e in eg.reference.ents}
        found.discard(getattr(task, "none_label", None) or "")
        code = Errors.E534
    else:
        return []
    if not found:
        raise TrainingError(code.format(name=name, task=type(task).__name__))
    return sorted(found)
