"""``spacy-llama.Summary.v1``: a summary of each doc in ``doc._.llama_summary``, in a word budget.

The budget is asked for in the prompt and enforced on the answer: a longer answer is cut at
the last sentence end within the budget, or at the budget itself. The document is fitted to
the model's context with the model's own tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Type

from spacy.tokens import Doc

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import ChatSetting, GeneratesAnswer, PromptedTask, PromptFormatter
from .extensions import check_names, install_extensions
from .fitting import Overflow, generation_requests
from .prompt import DocLike, PromptTemplate, load_template
from .saved import write_task

LEAD = re.compile(r"^\s*(?:summary\s*:)\s*", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


class SummaryTask(PromptedTask):
    """Generates an answer (tasks/base.py's ``GeneratesAnswer``)."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        max_words: int,
        chat: ChatSetting,
        system: Optional[str],
        on_overflow: Overflow,
        summary_attr: str,
    ) -> None:
        self.template = template
        self.max_words = max_words
        self.chat = chat
        self.system = system
        self.on_overflow = on_overflow
        self.summary_attr = summary_attr
        install_extensions(doc=self.extensions)

    @property
    def extensions(self) -> List[str]:
        return [self.summary_attr]

    @property
    def answer_attr(self) -> str:
        return self.summary_attr

    def gold_answer(self, reference: Doc) -> str:
        return str(reference._.get(self.summary_attr))

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        self._request(sample)  # a bad template fails when the pipeline is built

    def _request(self, doc: DocLike) -> GenerationRequest:
        user = self.template.render_doc(doc, max_words=self.max_words)
        return self.formatter.format(user, chat=self.chat, system=self.system)

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        return generation_requests(
            docs, self._request, self.formatter, on_overflow=self.on_overflow
        )

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            doc._.set(self.summary_attr, clip_words(LEAD.sub("", res.text).strip(), self.max_words))

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        write_task(path, {"template": self.template.source, "max_words": self.max_words})

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> SummaryTask:
        return self  # everything a summary task knows comes from its config


def clip_words(text: str, max_words: int) -> str:
    """At most ``max_words`` words: cut after the last full sentence that fits, if any."""
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    kept = words[:max_words]
    ends = [i for i, w in enumerate(kept) if SENTENCE_END.search(w)]
    return " ".join(kept[: ends[-1] + 1] if ends else kept)


@llama_tasks("spacy-llama.Summary.v1")
def summary_task_v1(
    *,
    max_words: int = 40,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
    summary_attr: str = "llama_summary",
) -> SummaryTask:
    """Summarise each doc in at most ``max_words`` words."""
    check_names(summary_attr=summary_attr)
    if max_words < 1:
        raise FewShotError(Errors.E319.format(max_words=max_words))
    return SummaryTask(
        load_template(template, template_path, "summary.jinja"),
        max_words=int(max_words),
        chat=chat,
        system=system,
        on_overflow=on_overflow,
        summary_attr=summary_attr,
    )


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _summary_task_generates_answer: Type[GeneratesAnswer] = SummaryTask
