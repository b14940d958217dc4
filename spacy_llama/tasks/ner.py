"""``spacy-llama.NER.v1``: generative NER for labels the upstream model lacks.

The model answers one ``TYPE: text`` line per entity. Each answer is aligned to token
boundaries by finding its text in the doc (after the previous answer first, so repeated
names follow the model's order). Answers that cannot be parsed, name an unknown type or do not
match tokens are reported in ``doc._.llama_ner_unaligned`` and logged, never dropped silently.
The aligned spans are merged with the upstream entities as the config says.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Type,
)

from spacy.scorer import Scorer as SpacyScorer
from spacy.tokens import Doc, Span
from spacy.training import Example as SpacyExample
from spacy.util import filter_spans

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import (
    ChatSetting,
    GeneratesEntities,
    PromptedTask,
    PromptFormatter,
    TakesLabelsFromData,
    doc_label,
)
from .confidence import (
    SCORE_ATTR,
    AnswerConfidence,
    CharRange,
    decoder_of,
    install_score,
    set_score,
)
from .data_labels import DataLabels, LabelSpec
from .examples import Example, check_entity_examples
from .extensions import check_names, install_extensions
from .fitting import Overflow, generation_requests
from .labels import Label, config_labels, labels_context
from .prompt import DocLike, PromptTemplate, load_template

logger = logging.getLogger("spacy_llama")
Merge = Literal["keep_upstream", "prefer_llama", "union", "spans"]
BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
TYPE_FIRST = re.compile(r"^([^:]{1,40}):\s*(.+)$")  # "ORG: Bank of England"
TYPE_LAST = re.compile(r"^(.+?)\s*[(\[]\s*([^()\[\]]{1,40})\s*[)\]]$")  # "Bank of England (ORG)"
NONE_ANSWERS = {"none", "none.", "no entities", "n/a", "-"}


@dataclass
class Answer:
    label: Optional[str]
    text: str
    line: str
    where: Optional[CharRange] = None  # the answer's characters that named it
    score: Optional[float] = None  # becomes span._.llama_score (see confidence.py)


class NERTask(DataLabels, PromptedTask):
    """Generates its entities (tasks/base.py's ``GeneratesEntities``)."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        labels: List[Label],
        examples: List[Example],
        chat: ChatSetting,
        system: Optional[str],
        merge: Merge,
        spans_key: str,
        unaligned_attr: str,
        on_overflow: Overflow,
        spec: LabelSpec = LabelSpec(),
    ) -> None:
        self.template = template
        self.chat = chat
        self.system = system
        self.merge = merge
        self.spans_key = spans_key
        self.unaligned_attr = unaligned_attr
        self.on_overflow = on_overflow
        self._start(labels, examples, spec)  # no labels: they come from the training data
        self._labels_changed()
        install_extensions(doc=self.extensions)
        install_score()

    def _labels_changed(self) -> None:
        # The model may answer with the verbalizer or the label name, in any case.
        self._lookup = {k.lower(): x.name for x in self.labels for k in (x.name, x.answer)}

    @property
    def extensions(self) -> List[str]:
        return [self.unaligned_attr]

    @property
    def assigns(self) -> List[str]:
        where = "doc.spans" if self.merge == "spans" else "doc.ents"
        # every Doc extension the task writes (NER.v2 adds llama_finish), and each span's
        # confidence (tasks/confidence.py)
        return [where, *(f"doc._.{name}" for name in self.extensions), f"span._.{SCORE_ATTR}"]

    def _check_examples(self, examples: List[Example]) -> List[Example]:
        return check_entity_examples(examples, self.labels, require_in_text=False)

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        self._request(sample)  # a bad template fails when the pipeline is built

    def _request(self, doc: DocLike) -> GenerationRequest:
        user = self.template.render_doc(
            doc, labels=labels_context(self.labels), examples=self.examples
        )
        return self.formatter.format(user, chat=self.chat, system=self.system)

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        return generation_requests(
            docs, self._request, self.formatter, on_overflow=self.on_overflow
        )

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        decode = decoder_of(self._formatter)
        for doc, res in zip(docs, results):
            answers, confidence = self.parse(res.text), AnswerConfidence(decode, res)
            for ans in answers:
                ans.score = confidence.of([ans.where]) if ans.where else None
            spans, problems = self.align(doc, answers)
            doc._.set(self.unaligned_attr, problems)
            if problems:
                logger.warning(
                    "[spacy-llama] NER: %d answer(s) for %s could not be aligned: %s",
                    len(problems),
                    doc_label(doc),
                    "; ".join(f"{p['text']!r} ({p['reason']})" for p in problems),
                )
            self._merge(doc, spans)

    # What a trained answer starts with after a plain (non-chat) prompt: free text begins
    # its "TYPE: text" lines on a new line after "Entities:", as the few-shot examples do.
    plain_answer_prefix = "\n"

    @property
    def label_names(self) -> List[str]:
        return self.entity_labels

    @property
    def entity_labels(self) -> List[str]:
        return [x.name for x in self.labels]

    def gold_answer(self, reference: Doc) -> str:
        """What the model should write for ``reference`` (the training target): the task's
        rendering of its gold entities of the task's labels, in text order, after a plain
        prompt starting as the task's answers do (NER.v1: a new line after "Entities:";
        NER.v2: the JSON right away); a chat reply starts its own message."""
        names = set(self.entity_labels)
        text = self.render([e for e in reference.ents if e.label_ in names])
        return text if self.chat else self.plain_answer_prefix + text

    def render(self, ents: Iterable[Span]) -> str:
        """The answer for ``ents`` as the few-shot examples show it (ner.jinja) and
        :meth:`parse` reads it: one "TYPE: text" line each, in order, or "none". Entities of
        other labels are left out (the task cannot name them)."""
        answers = {x.name: x.answer for x in self.labels}
        lines = [f"{answers[e.label_]}: {e.text}" for e in ents if e.label_ in answers]
        return "\n".join(lines) if lines else "none"

    def parse(self, text: str) -> List[Answer]:
        """One answer per non-empty line; a line that does not parse keeps ``label=None``."""
        out, at = [], 0
        for raw in text.splitlines(keepends=True):
            start, at = at, at + len(raw)
            line = BULLET.sub("", raw).strip()
            if not line or line.lower() in NONE_ANSWERS:
                continue
            label, ent = self._split(line)
            begin = start + raw.find(line)  # the line's characters, bullet and spaces left out
            out.append(
                Answer(
                    self._lookup.get(label.strip().lower()),
                    _unquote(ent),
                    line,
                    where=(begin, begin + len(line)),
                )
            )
        return out

    def _split(self, line: str) -> Tuple[str, str]:
        """(type, text) of "TYPE: text" or "text (TYPE)", preferring a known type."""
        first, last = TYPE_FIRST.match(line), TYPE_LAST.match(line)
        options = ([(first.group(1), first.group(2))] if first else []) + (
            [(last.group(2), last.group(1))] if last else []
        )
        for label, ent in options:
            if label.strip().lower() in self._lookup:
                return label, ent
        return options[0] if options else ("", line)

    def align(self, doc: Doc, answers: List[Answer]) -> Tuple[List[Span], List[Dict[str, Any]]]:
        spans: List[Span] = []
        problems: List[Dict[str, Any]] = []
        cursor = 0
        for ans in answers:
            if ans.label is None:
                problems.append(_problem(ans, "no known entity type in the answer"))
                continue
            span = _find(doc, ans.text, ans.label, cursor)
            if span is None:
                reason = "not on token boundaries" if ans.text in doc.text else "not in the text"
                problems.append(_problem(ans, reason))
                continue
            set_score(span, ans.score)
            spans.append(span)
            cursor = span.end_char
        kept = filter_spans(spans)
        kept_ids = {id(s) for s in kept}  # identity: a repeated answer is an equal Span
        for span in spans:
            if id(span) not in kept_ids:  # a repeated or nested answer
                ans = Answer(span.label_, span.text, span.text)
                problems.append(_problem(ans, "overlaps another answer"))
        return kept, problems

    def _merge(self, doc: Doc, spans: List[Span]) -> None:
        upstream = list(doc.ents)
        if self.merge == "spans":
            doc.spans[self.spans_key] = spans
        elif self.merge == "keep_upstream":
            doc.ents = upstream + [s for s in spans if not _overlaps(s, upstream)]
        elif self.merge == "prefer_llama":
            doc.ents = spans + [u for u in upstream if not _overlaps(u, spans)]
        else:  # union: the longer span wins an overlap; on a tie, the upstream one
            doc.ents = filter_spans(upstream + spans)

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """P/R/F per label over this task's labels (on doc.ents, or doc.spans[spans_key])."""
        wanted = {x.name for x in self.labels}
        key = self.spans_key if self.merge == "spans" else None

        def getter(doc: Doc, attr: str) -> List[Span]:
            # Gold docs have no spans[key]: their entities are compared.
            found = doc.spans[key] if key is not None and key in doc.spans else doc.ents
            return [s for s in found if s.label_ in wanted]

        return SpacyScorer.score_spans(
            examples, "ents", getter=getter, has_annotation=lambda doc: True
        )


def _unquote(text: str) -> str:
    text = text.strip().rstrip(",;").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def _find(doc: Doc, text: str, label: str, cursor: int) -> Optional[Span]:
    """The first token-aligned occurrence after ``cursor``, else anywhere; exact case first."""
    variants = [text] + ([text[:-1]] if text.endswith(".") else [])  # "Inc." vs a full stop
    for needle in filter(None, variants):
        for flags in (0, re.IGNORECASE):
            found = re.finditer(re.escape(needle), doc.text, flags)
            for start, end in sorted((m.span() for m in found), key=lambda s: (s[0] < cursor, s)):
                span = doc.char_span(start, end, label=label)
                if span is not None:
                    return span
    return None


def _overlaps(span: Span, others: List[Span]) -> bool:
    return any(span.start < o.end and o.start < span.end for o in others)


def _problem(ans: Answer, reason: str) -> Dict[str, Any]:
    return {"text": ans.text, "label": ans.label, "line": ans.line, "reason": reason}


@llama_tasks("spacy-llama.NER.v1")
def ner_task_v1(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    merge: Merge = "keep_upstream",
    spans_key: str = "llama_ner",
    unaligned_attr: str = "llama_ner_unaligned",
    on_overflow: Overflow = "truncate",
) -> NERTask:
    """Generative NER, aligned to tokens and merged with the upstream entities."""
    check_names(unaligned_attr=unaligned_attr)
    if not spans_key:
        raise FewShotError(Errors.E318)
    return NERTask(
        load_template(template, template_path, "ner.jinja"),
        labels=config_labels(labels, verbalizers, label_definitions),
        spec=LabelSpec(verbalizers, label_definitions),
        examples=list(examples or []),
        chat=chat,
        system=system,
        merge=merge,
        spans_key=spans_key,
        unaligned_attr=unaligned_attr,
        on_overflow=on_overflow,
    )


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _n_e_r_task_generates_entities: Type[GeneratesEntities] = NERTask
    _n_e_r_task_takes_labels_from_data: Type[TakesLabelsFromData] = NERTask
