"""``spacy-llama.task_scorer.v1`` (spaCy's ``scorers`` registry): what ``nlp.evaluate`` and
``spacy evaluate`` report for a llama component.

As with spaCy's own components, the scorer is a registered, swappable function named in the
component's config (``[components.llama.scorer]``). This one asks the component's task: a
task that can score itself (TextCat, EntityReview, NER, Surprisal) returns its figures, the
others nothing. Any other scorer (e.g. ``spacy.textcat_scorer.v2``) can be named instead.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

from spacy.training import Example
from spacy.util import registry

from .tasks.base import Evaluates

Scores = Dict[str, Any]


def task_score(examples: Iterable[Example], *, task: Optional[Any] = None, **_: Any) -> Scores:
    """The task's own scores of ``examples`` ({} for a task that does not evaluate itself)."""
    return task.score(examples) if isinstance(task, Evaluates) else {}


@registry.scorers("spacy-llama.task_scorer.v1")
def make_task_scorer() -> Callable[..., Scores]:
    return task_score
