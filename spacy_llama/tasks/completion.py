"""``spacy-llama.Completion.v1``: render a prompt per Doc, store the model's completion."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Type

from spacy.tokens import Doc

from ..errors import Errors, TemplateError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import ChatSetting, GeneratesAnswer, PromptedTask, PromptFormatter
from .extensions import install_extensions
from .fitting import Overflow, generation_requests
from .prompt import DocLike, PromptTemplate, check_one_template
from .saved import write_task


class CompletionTask(PromptedTask):
    """Generates an answer (tasks/base.py's ``GeneratesAnswer``)."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        chat: ChatSetting,
        system: Optional[str],
        on_overflow: Overflow,
        completion_attr: str,
        logprobs_attr: str,
    ) -> None:
        self.template = template
        self.chat = chat
        self.system = system
        self.on_overflow = on_overflow
        self.completion_attr = completion_attr
        self.logprobs_attr = logprobs_attr
        install_extensions(doc=self.extensions)

    @property
    def extensions(self) -> List[str]:
        return [self.completion_attr, self.logprobs_attr]

    @property
    def answer_attr(self) -> str:
        return self.completion_attr

    def gold_answer(self, reference: Doc) -> str:
        return str(reference._.get(self.completion_attr))

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        # Render once now, so a bad variable or filter fails when the pipeline is built.
        self._request(sample)

    def _request(self, doc: DocLike) -> GenerationRequest:
        user = self.template.render_doc(doc)
        return self.formatter.format(user, chat=self.chat, system=self.system)

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        # A prompt too long for the context loses the end of the document, never the
        # instruction (or raises, with on_overflow = "error").
        return generation_requests(
            docs, self._request, self.formatter, on_overflow=self.on_overflow
        )

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            doc._.set(self.completion_attr, res.text)
            doc._.set(self.logprobs_attr, [None if x is None else float(x) for x in res.logprobs])

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        write_task(path, {"template": self.template.source})

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> CompletionTask:
        return self  # everything a completion task knows comes from its config


# The ``llama`` factory's default prompt (pipeline.py). The instruction comes first: the
# engine computes the prompt prefix every document shares (chat template, system prompt,
# instruction) once, not once per document.
SUMMARY_TEMPLATE = (
    "Summarize the text in one short sentence.\n\n"
    "Text: {{ text }}"
    "{% if ents %}\nNamed entities: "
    "{% for e in ents %}{{ e.text }} ({{ e.label_ }}){{ ', ' if not loop.last }}{% endfor %}"
    "{% endif %}"
)
# Templates a task block gets without asking (this function's default, and the factory's,
# which spaCy merges into a block that only sets template_path): a file replaces them.
DEFAULT_TEMPLATES = ("{{ text }}", SUMMARY_TEMPLATE)


@llama_tasks("spacy-llama.Completion.v1")
def completion_task_v1(
    *,
    template: str = "{{ text }}",
    template_path: Optional[str] = None,
    chat: ChatSetting = False,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
    completion_attr: str = "llama_completion",
    logprobs_attr: str = "llama_logprobs",
) -> CompletionTask:
    """Free-form completion of a prompt rendered from each Doc."""
    if not completion_attr or not logprobs_attr or completion_attr == logprobs_attr:
        raise TemplateError(Errors.E301)
    check_one_template(template, template_path, defaults=DEFAULT_TEMPLATES)
    return CompletionTask(
        PromptTemplate.load(template, template_path),
        chat=chat,
        system=system,
        on_overflow=on_overflow,
        completion_attr=completion_attr,
        logprobs_attr=logprobs_attr,
    )


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _completion_task_generates_answer: Type[GeneratesAnswer] = CompletionTask
