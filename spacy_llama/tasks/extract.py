"""``spacy-llama.Extract.v1``: fill in a JSON schema from each doc (structured output).

Each doc's request carries the schema as a ``json_schema`` constraint in which every span
field's strings are an ``enum`` of the doc's own substrings (token n-grams, see
``structured.candidate_substrings``), so what the model copies from the text always lands on
token boundaries. The parsed object is validated against that schema and written to
``doc._.<data_attr>``; the span fields' strings become Spans in ``doc.spans[spans_key]``,
labelled with the field name. An answer cut off by max_new_tokens (or one that does not
match the schema) fails its doc (``types.DOC_ERROR_KEY``) and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from spacy.scorer import Scorer as SpacyScorer
from spacy.tokens import Doc, Span
from spacy.training import Example as SpacyExample

from ..errors import Errors, FewShotError, SchemaError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import ChatSetting, PromptedTask, PromptFormatter
from .calibration import probe_doc
from .confidence import SCORE_ATTR, decoder_of, install_score, score_copied_strings
from .extensions import check_names, install_extensions
from .fitting import Overflow, generation_requests
from .prompt import DocLike, PromptTemplate, load_template
from .saved import write_task
from .schema import Schema, check_span_fields, doc_schema, is_array_field, load_schema
from .structured import (
    DEFAULT_MAX_SPAN_TOKENS,
    FINISH_ATTR,
    align_strings,
    candidate_substrings,
    check_calibration,
    check_max_string_tokens,
    confidences,
    json_constraint,
    read_answer,
)

NAME = "Extract.v1"


class ExtractTask(PromptedTask):
    def __init__(
        self,
        template: PromptTemplate,
        *,
        schema: Schema,
        span_fields: List[str],
        spans_key: str,
        data_attr: str,
        max_span_tokens: int,
        chat: ChatSetting,
        system: Optional[str],
        on_overflow: Overflow,
        max_string_tokens: int = 0,
        calibrate: bool = False,
        content_free: Sequence[str] = (),
        prior_weight: float = 1.0,
    ) -> None:
        self.template = template
        self.max_string_tokens = max_string_tokens  # 0: free strings are not capped
        # enum fields decided as wholes, calibrated on content-free probes (TextCat.v2's PMI)
        self.calibrate = calibrate
        self.content_free = list(content_free)
        self.prior_weight = prior_weight
        self._probes: Optional[Tuple[Tuple[str, str], ...]] = None
        self.schema = schema
        self.span_fields = span_fields
        self.spans_key = spans_key
        self.data_attr = data_attr
        self.max_span_tokens = max_span_tokens
        self.chat = chat
        self.system = system
        self.on_overflow = on_overflow
        self._schema_text = json.dumps(schema, indent=2, ensure_ascii=False)
        install_extensions(doc=self.extensions)
        install_score()

    @property
    def extensions(self) -> List[str]:
        return [self.data_attr, self.confidence_attr, FINISH_ATTR]

    @property
    def confidence_attr(self) -> str:
        """Per enum field the engine decided as a whole, its probability (by JSON pointer)."""
        return f"{self.data_attr}_confidence"

    @property
    def assigns(self) -> List[str]:
        spans = ["doc.spans", f"span._.{SCORE_ATTR}"] if self.span_fields else []
        return [f"doc._.{name}" for name in self.extensions] + spans

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        self._request(sample)  # a bad template fails when the pipeline is built

    def schema_for(self, doc: DocLike) -> Schema:
        """The schema with every span field restricted to ``doc``'s substrings."""
        if not self.span_fields:
            return self.schema
        candidates = candidate_substrings(doc, self.max_span_tokens)
        return doc_schema(self.schema, self.span_fields, candidates)

    def _request(self, doc: DocLike) -> GenerationRequest:
        req = self._plain_request(doc)
        if self.calibrate and req.constraint is not None:
            if self._probes is None:  # the same prompts for every doc: built once
                probes = [self._plain_request(probe_doc(doc.vocab, t)) for t in self.content_free]
                self._probes = tuple((r.prompt, r.constraint.spec) for r in probes if r.constraint)
            req.constraint = dataclasses.replace(
                req.constraint, probes=self._probes, prior_weight=self.prior_weight
            )
        return req

    def _plain_request(self, doc: DocLike) -> GenerationRequest:
        # The prompt shows the schema as configured (not the per-doc enums): the instruction
        # stays the same for every doc, so the engine computes its prefix once.
        user = self.template.render_doc(doc, schema=self._schema_text, span_fields=self.span_fields)
        req = self.formatter.format(user, chat=self.chat, system=self.system)
        req.constraint = json_constraint(self.schema_for(doc), self.max_string_tokens)
        return req

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        return generation_requests(
            docs, self._request, self.formatter, on_overflow=self.on_overflow
        )

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            if res.finish_reason == "empty":  # an empty doc: no model call, nothing found
                doc._.set(self.data_attr, None)
                doc.spans[self.spans_key] = []
                continue
            value = read_answer(doc, res, self.schema_for(doc), NAME)
            if value is None:
                continue  # the doc is marked failed; nothing half-written
            doc._.set(self.data_attr, value)
            doc._.set(self.confidence_attr, confidences(value, res))
            doc.spans[self.spans_key] = self.spans(doc, value)
            score_copied_strings(doc.spans[self.spans_key], res, decoder_of(self._formatter))

    def spans(self, doc: Doc, value: Dict[str, Any]) -> List[Span]:
        """The span fields' strings as Spans, field by field, each field in its own order.
        A small model often repeats a string more often than the doc holds it (the same
        name twelve times); each (start, end, label) is written once."""
        out: List[Span] = []
        seen = set()
        for field in self.span_fields:
            found = value.get(field)
            if found is None:
                continue
            texts = found if is_array_field(self.schema["properties"][field]) else [found]
            for span in align_strings(doc, texts, field):
                key = (span.start, span.end, span.label_)
                if key not in seen:
                    seen.add(key)
                    out.append(span)
        return out

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """P/R/F of the span fields (doc.spans[spans_key]) and the share of docs whose
        object equals the reference's ``doc._.<data_attr>`` (where it has one)."""
        examples = list(examples)
        key = self.spans_key

        def getter(doc: Doc, attr: str) -> List[Span]:
            return list(doc.spans[key]) if key in doc.spans else []

        scores = SpacyScorer.score_spans(
            examples, f"spans_{key}", getter=getter, has_annotation=lambda doc: key in doc.spans
        )
        pairs = [
            (ex.predicted._.get(self.data_attr), ex.reference._.get(self.data_attr))
            for ex in examples
            if ex.reference._.get(self.data_attr) is not None
        ]
        scores["llama_data_acc"] = sum(p == g for p, g in pairs) / len(pairs) if pairs else None
        return scores

    def to_disk(self, path: Any, *, exclude: Iterable[str] = ()) -> None:
        write_task(
            path,
            {
                "template": self.template.source,
                "schema": self.schema,
                "span_fields": self.span_fields,
            },
        )

    def from_disk(self, path: Any, *, exclude: Iterable[str] = ()) -> ExtractTask:
        return self  # everything an extract task knows comes from its config


@llama_tasks("spacy-llama.Extract.v1")
def extract_task_v1(
    *,
    schema: Optional[Union[str, Dict[str, Any]]] = None,
    schema_path: Optional[str] = None,
    span_fields: List[str] = [],  # noqa: B006 - read only
    spans_key: str = "llama_extract",
    data_attr: str = "llama_data",
    max_span_tokens: int = DEFAULT_MAX_SPAN_TOKENS,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
) -> ExtractTask:
    """Structured extraction: a JSON object per doc, span fields copied from the text (as
    released: Extract.v2 adds ``max_string_tokens`` and enum calibration)."""
    return extract_task_v2(
        schema=schema, schema_path=schema_path, span_fields=span_fields, spans_key=spans_key,
        data_attr=data_attr, max_span_tokens=max_span_tokens, template=template,
        template_path=template_path, chat=chat, system=system, on_overflow=on_overflow,
    )


@llama_tasks("spacy-llama.Extract.v2")
def extract_task_v2(
    *,
    schema: Optional[Union[str, Dict[str, Any]]] = None,
    schema_path: Optional[str] = None,
    span_fields: List[str] = [],  # noqa: B006 - read only
    spans_key: str = "llama_extract",
    data_attr: str = "llama_data",
    max_span_tokens: int = DEFAULT_MAX_SPAN_TOKENS,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
    max_string_tokens: Optional[int] = None,
    calibrate: bool = False,
    content_free: Union[str, List[str]] = ["N/A", "", "[MASK]"],  # noqa: B006 - read only
    prior_weight: float = 1.0,
) -> ExtractTask:
    """Extract.v1 plus two settings. ``max_string_tokens``: the most tokens one free
    string value (a string field that is not a span field and has no ``enum``) may hold;
    the engine closes a string that reaches it. None (the default): no cap beyond the
    schema's own ``maxLength``.
    ``calibrate``: every ``enum`` field decided as a whole (a closed set of at most 32
    values) subtracts ``prior_weight`` times each value's log-probability after the same
    prompt around each ``content_free`` text (PMI, as TextCat.v2 does; off by default)."""
    check_names(data_attr=data_attr)
    if not spans_key:
        raise FewShotError(Errors.E318)
    if max_span_tokens < 1:
        raise SchemaError(Errors.E367.format(task=NAME, value=max_span_tokens))
    loaded = load_schema(schema, schema_path)
    texts, weight = check_calibration(NAME, calibrate, content_free, prior_weight)
    return ExtractTask(
        load_template(template, template_path, "extract.jinja"),
        schema=loaded,
        span_fields=check_span_fields(loaded, span_fields),
        spans_key=spans_key,
        data_attr=data_attr,
        max_span_tokens=max_span_tokens,
        chat=chat,
        system=system,
        on_overflow=on_overflow,
        max_string_tokens=check_max_string_tokens(NAME, max_string_tokens),
        calibrate=calibrate,
        content_free=texts,
        prior_weight=weight,
    )
