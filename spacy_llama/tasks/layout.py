"""Which doc and which question each request of a batch asks about, and the answers
matched back to their docs through it.

A task stamps every request it builds (``ask``) with an ``Asked``: the doc's index in the
batch given to ``Task.requests`` (None for a calibration probe, which is about no doc) and
the question (a label, an entity; 0 when a doc has one). Results come back in request
order (the engine's contract), so a task that knows the layout of its requests
(``layout(docs)``, from the same plan its ``requests`` are built from) and the training
losses (which hold the requests themselves) match answers to docs with :func:`match`
instead of index arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Generic, List, NamedTuple, Optional, Sequence, TypeVar

from ..errors import Errors, TaskLayoutError
from ..types import AnyRequest

T = TypeVar("T")
R = TypeVar("R", bound=AnyRequest)


class Asked(NamedTuple):
    doc_index: Optional[int]  # None: a calibration probe
    question: int = 0


def ask(request: R, asked: Asked) -> R:
    """``request``, stamped with what it asks."""
    request.doc_index, request.question = asked.doc_index, asked.question
    return request


def asked(request: AnyRequest) -> Asked:
    return Asked(request.doc_index, request.question)


@dataclass
class Matched(Generic[T]):
    """Answers grouped by what they answer: per doc of the batch, its answers in question
    order; per question, the calibration probes' answers in request order."""

    docs: List[List[T]]
    probes: Dict[int, List[T]] = field(default_factory=dict)

    def probes_of(self, question: int) -> List[T]:
        return self.probes.get(question, [])


def match(layout: Sequence[Asked], answers: Sequence[T], n_docs: int, *, task: str) -> Matched[T]:
    """``answers[i]`` answers the request ``layout[i]`` describes."""
    if len(layout) != len(answers):
        raise TaskLayoutError(Errors.E960.format(task=task, n=len(answers), m=len(layout)))
    docs: List[Dict[int, T]] = [{} for _ in range(n_docs)]
    probes: Dict[int, List[T]] = {}
    for where, answer in zip(layout, answers):
        if where.doc_index is None:
            probes.setdefault(where.question, []).append(answer)
        elif not 0 <= where.doc_index < n_docs or where.question in docs[where.doc_index]:
            raise TaskLayoutError(Errors.E961.format(task=task, asked=tuple(where), n_docs=n_docs))
        else:
            docs[where.doc_index][where.question] = answer
    return Matched([[mine[q] for q in sorted(mine)] for mine in docs], probes)
