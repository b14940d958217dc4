"""The Task protocol and the prompt budget tasks receive from the component."""

from __future__ import annotations

from pathlib import Path
from typing import (
    Iterable,
    List,
    Literal,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

from spacy.tokens import Doc

from ..errors import Errors, TaskStateError
from ..types import AnyRequest, AnyResult, GenerationRequest

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


@runtime_checkable
class Task(Protocol):
    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        """Called once the model is known; validate templates here, not on the 10,000th doc."""

    def requests(self, docs: Sequence[Doc]) -> Sequence[AnyRequest]:
        """Any number of requests per doc (e.g. one per entity), in a deterministic order."""

    def assign(self, docs: Sequence[Doc], results: Sequence[AnyResult]) -> None:
        """``results[i]`` answers ``requests(docs)[i]``."""

    @property
    def extensions(self) -> List[str]:
        """Names of the ``doc._``/``span._``/``token._`` attributes this task writes."""

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None: ...

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> Task: ...


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
