"""The Task protocol, the prompt budget tasks receive from the component, and the
capabilities a task may have (in the style of spaCy's ``ty.py``): small runtime-checkable
protocols that say what a task does, so that training (``training/capabilities.py``, one
table) and the component dispatch on what a task can do, never on its attribute names.

A custom task is trainable when it implements exactly one of ``ScoresLabels``,
``ReviewsEntities``, ``GeneratesEntities`` and ``GeneratesAnswer``; its labels may come
from the training data when it also implements ``TakesLabelsFromData``."""

from __future__ import annotations

from pathlib import Path
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Literal,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    runtime_checkable,
)

from spacy.tokens import Doc
from spacy.training import Example

from ..errors import Errors, TaskStateError
from ..types import (
    AnyRequest,
    AnyResult,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
)
from .labels import Label

# ``chat = "auto"``: the tokenizer's chat template when it has one, the plain prompt otherwise.
ChatSetting = Union[bool, Literal["auto"]]


class PromptFormatter(Protocol):
    """What a task may ask of the model: format a prompt and count its tokens."""

    def uses_chat(self, chat: ChatSetting) -> bool:
        """Whether prompts go through the chat template (``"auto"`` resolved, and logged)."""

    @property
    def budget(self) -> int:
        """Prompt tokens available (context length minus max_new_tokens)."""

    def format(
        self, user: str, *, chat: ChatSetting, system: Optional[str]
    ) -> GenerationRequest: ...

    def count(self, request: GenerationRequest) -> int: ...

    def document_start(self, start: str) -> Tuple[bool, List[int]]:
        """What a scored text starts after: (add special tokens, ids put before it)."""


# What a task asks and what it is answered with (``Task[ScoreRequest, ScoreResult]``); a bare
# ``Task`` is any task.
Req = TypeVar("Req", bound=AnyRequest, covariant=True)
Res = TypeVar("Res", bound=AnyResult, contravariant=True)


@runtime_checkable
class Task(Protocol[Req, Res]):
    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        """Called once the model is known; validate templates here, not on the 10,000th doc."""

    def requests(self, docs: Sequence[Doc]) -> Sequence[Req]:
        """Any number of requests per doc (e.g. one per entity), in a deterministic order,
        each stamped with what it asks (tasks/layout.py)."""

    def assign(self, docs: Sequence[Doc], results: Sequence[Res]) -> None:
        """``results[i]`` answers ``requests(docs)[i]``."""

    @property
    def extensions(self) -> List[str]:
        """Names of the ``doc._``/``span._``/``token._`` attributes this task writes."""

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None: ...

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> Any:
        """The task itself, with what a saved pipeline kept."""


# -- capabilities ----------------------------------------------------------------------------
# Each says what the task asks the model and how a gold (reference) doc becomes its training
# target. The shipped tasks implement one each: TextCat scores label candidates,
# EntityReview reviews entities, NER (v1, v2) generates its entities, Completion and Summary
# generate an answer. Their members are distinct, so no task matches two by accident.


@runtime_checkable
class ScoresLabels(Task[ScoreRequest, ScoreResult], Protocol):
    """Scores label candidates: per doc one question (``exclusive``: which label) or one
    yes/no question per label, each a ScoreRequest whose ``question`` says which; the
    calibration probes (``doc_index`` None) carry the question they calibrate."""

    labels: List[Label]
    exclusive: bool
    length_normalize: bool  # a candidate's value: the mean of its token log-probs, else the sum
    prior_weight: float  # the share of the probes' mean value subtracted from a doc's
    threshold: float  # a multi-label doc has a label whose probability reaches it


    def gold_candidates(self, reference: Doc) -> List[int]:
        """Per question of the doc, the index of the gold candidate (the training target)."""


@runtime_checkable
class ReviewsEntities(Task[ScoreRequest, ScoreResult], Protocol):
    """Reviews entities: one ScoreRequest per reviewed entity of a doc (its ``question``:
    the entity's place among the reviewed ones), the labels' answers as candidates, after
    one calibration probe when it calibrates."""

    labels: List[Label]  # the candidates, in order (none_label last, when there is one)
    length_normalize: bool


    @property
    def entity_labels(self) -> List[str]:
        """The labels an entity can end up with (not a "none of these" answer)."""

    @property
    def none_label(self) -> Optional[str]:
        """The answer for "none of these labels", or None."""

    def review_targets(self, example: Example) -> Tuple[Doc, List[str]]:
        """The doc to ask about (the predicted doc with the gold entities) and each of its
        questions' gold label: what the task is trained on."""


@runtime_checkable
class GeneratesEntities(Task[GenerationRequest, GenerationResult], Protocol):
    """Generates its entities as an answer (one GenerationRequest per doc); trained on its
    own rendering of the reference doc's entities."""

    labels: List[Label]


    @property
    def entity_labels(self) -> List[str]:
        """The labels it can give an entity."""

    def gold_answer(self, reference: Doc) -> str:
        """What the model should write for ``reference`` (the training target)."""


@runtime_checkable
class GeneratesAnswer(Task[GenerationRequest, GenerationResult], Protocol):
    """Generates an answer (one GenerationRequest per doc) that the reference doc holds in
    ``doc._.<answer_attr>``."""


    @property
    def answer_attr(self) -> str:
        """The Doc extension holding the answer (the task writes it; training reads it)."""

    def gold_answer(self, reference: Doc) -> str:
        """What the model should write for ``reference`` (the training target)."""


@runtime_checkable
class Evaluates(Protocol):
    """A task that measures its own annotations against gold ones, as spaCy components do
    (``score(examples)`` -> a dict of metrics; what ``LlamaPipe.score`` and ``evaluate``
    report)."""

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]: ...


@runtime_checkable
class NamesLabels(Protocol):
    """A task with a set of labels it can assign: TextCat's categories, NER's and
    EntityReview's entity labels, REL's relations (the component's ``labels``, which spaCy
    writes to meta.json)."""

    @property
    def label_names(self) -> List[str]: ...


@runtime_checkable
class TakesLabelsFromData(Protocol):
    """A labelled task that may be built with ``labels = []`` and take its labels from the
    training data in ``initialize`` (as spaCy's textcat does)."""

    @property
    def needs_labels(self) -> bool:
        """True until it has labels."""

    def set_labels(self, names: Sequence[str]) -> None: ...


def needs_labels(task: Task) -> bool:
    """Whether ``task`` still waits for the labels of the training data."""
    return isinstance(task, TakesLabelsFromData) and task.needs_labels


def doc_label(doc: Doc) -> str:
    """How a doc is named in warnings: its id if the corpus reader gave one, else its text."""
    doc_id = doc.user_data.get("spacy_llama_id") if doc.user_data else None
    snippet = doc.text[:40].replace("\n", " ")
    more = "..." if len(doc.text) > 40 else ""
    return f"doc {doc_id!r} ({snippet!r}{more})" if doc_id is not None else f"doc {snippet!r}{more}"


class PromptedTask:
    """Plumbing every prompting task shares: the formatter that ``initialize`` hands over,
    and the chat setting, resolved against the model once it is known."""

    _formatter: Optional[PromptFormatter] = None
    chat: ChatSetting = False

    def bind(self, formatter: PromptFormatter) -> None:
        """Take the formatter; from here on ``self.chat`` is True or False."""
        self._formatter = formatter
        self.chat = formatter.uses_chat(self.chat)

    @property
    def formatter(self) -> PromptFormatter:
        if self._formatter is None:
            raise TaskStateError(Errors.E300.format(task=type(self).__name__))
        return self._formatter
