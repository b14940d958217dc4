"""What the entity tasks (EntityReview, generative NER) learn from: the reference doc's
entities, checked before the first step, and the gold entities each task is trained on."""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Set, Tuple

from spacy.tokens import Doc, Span
from spacy.training import Example

from ..errors import Errors, TrainingError


def is_entity_review(task: Any) -> bool:
    return all(hasattr(task, a) for a in ("reviewed", "none_label", "entity_labels"))


def is_ner(task: Any) -> bool:
    return all(hasattr(task, a) for a in ("render", "parse", "align"))


def is_entity_task(task: Any) -> bool:
    return is_entity_review(task) or is_ner(task)


def entity_label_names(task: Any) -> List[str]:
    """The labels an entity can be given (EntityReview's none_label is not one)."""
    if is_entity_review(task):
        return list(task.entity_labels)
    return [x.name for x in task.labels]


def check_entities(name: str, task: Any, eg: Example, where: str) -> None:
    """The reference doc must say which entities it has (``doc.ents = []`` says none)."""
    if not eg.reference.has_annotation("ENT_IOB"):
        raise TrainingError(Errors.E535.format(name=name, task=type(task).__name__, where=where))


def check_entity_labels(name: str, task: Any, examples: Iterable[Example]) -> None:
    """At least one gold entity must carry a label of the task: otherwise the labels are
    probably named differently from the data's (PER vs PERSON)."""
    wanted = set(entity_label_names(task))
    found: Set[str] = {e.label_ for eg in examples for e in eg.reference.ents}
    if not wanted & found:
        raise TrainingError(
            Errors.E536.format(
                name=name, task=type(task).__name__, labels=sorted(wanted), found=sorted(found)
            )
        )


def review_targets(task: Any, eg: Example) -> Tuple[Doc, List[str]]:
    """The doc EntityReview is asked about (a copy of the predicted doc whose entities are
    the gold spans) and each gold span's target label, in the order ``task.requests`` asks.

    The entity's label in the prompt is the upstream one when the predicted doc has the same
    span (what inference sees), else the gold label. A gold label the task does not have is
    taught as ``none_label`` when there is one, and left out otherwise."""
    doc = eg.predicted.copy()
    upstream = {(e.start_char, e.end_char): e.label_ for e in eg.predicted.ents}
    names = {x.name for x in task.labels}
    spans: List[Span] = []
    targets = {}
    for ent in eg.reference.ents:
        target = _review_target(task, ent.label_, names)
        key = (ent.start_char, ent.end_char)
        shown = upstream.get(key, ent.label_)
        span = doc.char_span(*key, label=shown)
        if target is None or span is None:  # nothing to teach, or not on the doc's tokens
            continue
        spans.append(span)
        targets[(span.start, span.end)] = target
    doc.ents = spans
    return doc, [targets[(e.start, e.end)] for e in task.reviewed(doc)]


def _review_target(task: Any, gold: str, names: Set[str]) -> Optional[str]:
    if gold in names and gold != task.none_label:
        return gold
    return task.none_label


def ner_gold(task: Any, eg: Example) -> List[Span]:
    """The reference entities, in text order, that the NER task can name."""
    names = {x.name for x in task.labels}
    return [e for e in eg.reference.ents if e.label_ in names]
