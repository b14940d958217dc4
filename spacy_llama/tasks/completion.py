"""``spacy-llama.Completion.v1``: render a prompt per Doc, store the model's completion."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, List, Literal, Optional, Sequence

import srsly
from spacy.tokens import Doc

from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult, PromptTooLongError
from .base import PromptFormatter, doc_label, set_doc_extension
from .prompt import DocLike, PromptTemplate, TemplateError

Overflow = Literal["truncate", "error"]


class CompletionTask:
    def __init__(
        self,
        template: PromptTemplate,
        *,
        chat: bool,
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
        self._formatter: Optional[PromptFormatter] = None
        for attr in self.extensions:
            set_doc_extension(attr)

    @property
    def extensions(self) -> List[str]:
        return [self.completion_attr, self.logprobs_attr]

    @property
    def formatter(self) -> PromptFormatter:
        if self._formatter is None:
            raise RuntimeError("CompletionTask.initialize(formatter, sample=...) was not called.")
        return self._formatter

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self._formatter = formatter
        # Render once now, so a bad variable or filter fails when the pipeline is built.
        self._request(sample)

    def _request(self, doc: DocLike) -> GenerationRequest:
        user = self.template.render_doc(doc)
        return self.formatter.format(user, chat=self.chat, system=self.system)

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        out = []
        for doc in docs:
            label = doc_label(doc)
            if not doc.text.strip():
                out.append(GenerationRequest(prompt="", label=label))
                continue
            req = self._request(doc)
            req.label = label
            if self.formatter.count(req) > self.formatter.budget:
                req = self._fit(doc, label)
            out.append(req)
        return out

    def _fit(self, doc: Doc, label: str) -> GenerationRequest:
        """Cut the document (never the instruction) to the longest prefix that fits."""
        budget = self.formatter.budget
        if self.on_overflow == "error":
            raise PromptTooLongError(
                f"The prompt for {label} needs more than {budget} tokens (the model's context "
                "minus max_new_tokens). Shorten the document, lower max_new_tokens, or set "
                'on_overflow = "truncate" in the task config.'
            )
        lo, hi = 0, len(doc) - 1  # find the largest k with doc[:k] fitting
        best: Optional[GenerationRequest] = None
        while lo <= hi:
            mid = (lo + hi) // 2
            req = self._request(doc[:mid])
            if self.formatter.count(req) <= budget:
                best, lo = req, mid + 1
            else:
                hi = mid - 1
        if best is None:
            raise PromptTooLongError(
                f"The prompt template alone (without {label}'s text) exceeds {budget} tokens; "
                "shorten the template or the system prompt, or lower max_new_tokens."
            )
        warnings.warn(
            f"[spacy-llama] The prompt for {label} was longer than {budget} tokens; the "
            f"document was truncated to its first {lo - 1} of {len(doc)} tokens.",
            stacklevel=2,
        )
        best.label = label
        return best

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            doc._.set(self.completion_attr, res.text)
            doc._.set(self.logprobs_attr, [float(x) for x in res.logprobs])

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "task.json", {"template": self.template.source})

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> CompletionTask:
        return self  # everything a completion task knows comes from its config


@llama_tasks("spacy-llama.Completion.v1")
def completion_task_v1(
    *,
    template: str = "{{ text }}",
    template_path: Optional[str] = None,
    chat: bool = False,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
    completion_attr: str = "llama_completion",
    logprobs_attr: str = "llama_logprobs",
) -> CompletionTask:
    """Free-form completion of a prompt rendered from each Doc."""
    if not completion_attr or not logprobs_attr or completion_attr == logprobs_attr:
        raise TemplateError("completion_attr and logprobs_attr must be two different names.")
    return CompletionTask(
        PromptTemplate.load(template, template_path),
        chat=chat,
        system=system,
        on_overflow=on_overflow,
        completion_attr=completion_attr,
        logprobs_attr=logprobs_attr,
    )
