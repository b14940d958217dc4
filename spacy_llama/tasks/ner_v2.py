"""``spacy-llama.NER.v2``: generative NER whose answer is constrained JSON.

The answer is ``{"entities": [{"label": <one of the labels>, "text": <one of the doc's
substrings>}]}`` (a ``json_schema`` constraint per doc), so every answer names a known type
and lands on token boundaries: nothing is unaligned. Answers are aligned and merged with the
upstream entities exactly as NER.v1 does (its code, reused); answers that overlap another
one (a repeated or nested name) are the only ones not written, and are listed in
``doc._.<overlaps_attr>``. Few-shot examples are shown as the JSON answer. NER.v1 is
unchanged.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Type

from spacy.tokens import Doc, Span

from ..errors import Errors, FewShotError, SchemaError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import ChatSetting, GeneratesEntities, doc_label
from .confidence import AnswerConfidence, Decode, decoder_of, json_objects, json_value_ranges
from .data_labels import LabelSpec
from .examples import Example
from .extensions import check_names
from .fitting import Overflow
from .labels import Label, config_labels, labels_context
from .ner import Answer, Merge, NERTask
from .prompt import DocLike, PromptTemplate, load_template
from .structured import (
    DEFAULT_MAX_SPAN_TOKENS,
    FINISH_ATTR,
    candidate_substrings,
    check_max_items,
    json_constraint,
    read_answer,
)

logger = logging.getLogger("spacy_llama")
NAME = "NER.v2"


def entities_schema(
    labels: Sequence[Label], candidates: List[str], max_entities: Optional[int] = None
) -> Dict[str, Any]:
    entity = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": [x.answer for x in labels]},
            "text": {"type": "string", "enum": list(candidates)},
        },
        "required": ["label", "text"],
        "additionalProperties": False,
    }
    array: Dict[str, Any] = {"type": "array", "items": entity}
    if max_entities is not None:  # bounds the answer: a model repeating itself still ends
        array["maxItems"] = max_entities
    return {
        "type": "object",
        "properties": {"entities": array},
        "required": ["entities"],
        "additionalProperties": False,
    }


def example_answer(ex: Example) -> str:
    """A checked few-shot example's entities as the JSON the model is to write."""
    ents = [{"label": e["answer"], "text": e["text"]} for e in ex["entities"]]
    return json.dumps({"entities": ents}, ensure_ascii=False)


def scored_answers(answers: List[Answer], res: GenerationResult, decode: Optional[Decode]) -> None:
    """Each answer's score: the tokens of its label and text values in its JSON object (the
    keys and punctuation are the grammar's, not the model's choice)."""
    confidence = AnswerConfidence(decode, res)
    objects = json_objects(res.text, "entities")
    if len(objects) != len(answers):
        return
    for ans, ((start, end), value) in zip(answers, objects):
        found = json_value_ranges(res.text[:end], [value["label"], value["text"]], start)
        ranges = [r for r in found if r is not None]
        ans.score = confidence.of(ranges) if ranges else None


class NERv2Task(NERTask):
    """NER.v1's labels, examples, alignment, merge and scoring; a JSON answer."""

    # The grammar admits no whitespace before the JSON: the answer starts at "{".
    plain_answer_prefix = ""

    def render(self, ents: Iterable[Span]) -> str:
        """The JSON answer for ``ents`` exactly as the constrained decoder writes it (keys in
        schema order, ", " and ": " separators), so training teaches what inference decodes
        and :meth:`assign` reads back. Entities of other labels are left out; past
        ``max_entities``, the first ones are kept (the schema allows no more)."""
        answers = {x.name: x.answer for x in self.labels}
        items = [{"label": answers[e.label_], "text": e.text} for e in ents if e.label_ in answers]
        if self.max_entities is not None:
            items = items[: self.max_entities]
        return json.dumps({"entities": items}, ensure_ascii=False)

    def __init__(
        self,
        template: PromptTemplate,
        *,
        max_span_tokens: int,
        max_entities: Optional[int],
        **settings: Any,
    ) -> None:
        self.max_span_tokens = max_span_tokens
        self.max_entities = max_entities
        super().__init__(template, **settings)

    @property
    def extensions(self) -> List[str]:
        return [self.unaligned_attr, FINISH_ATTR]

    def schema_for(self, doc: DocLike) -> Dict[str, Any]:
        cands = candidate_substrings(doc, self.max_span_tokens)
        return entities_schema(self.labels, cands, self.max_entities)

    def _request(self, doc: DocLike) -> GenerationRequest:
        examples = [{**ex, "json": example_answer(ex)} for ex in self.examples]
        user = self.template.render_doc(doc, labels=labels_context(self.labels), examples=examples)
        req = self.formatter.format(user, chat=self.chat, system=self.system)
        req.constraint = json_constraint(self.schema_for(doc))
        return req

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            if res.finish_reason == "empty":  # an empty doc: no model call
                doc._.set(self.unaligned_attr, [])
                self._merge(doc, [])
                continue
            value = read_answer(doc, res, self.schema_for(doc), NAME)
            if value is None:
                continue  # the doc is marked failed; its entities are left as they were
            answers = [
                Answer(self._lookup[e["label"].lower()], e["text"], json.dumps(e))
                for e in value["entities"]
            ]
            scored_answers(answers, res, decoder_of(self._formatter))
            spans, overlaps = self.align(doc, answers)
            doc._.set(self.unaligned_attr, overlaps)
            if overlaps:
                logger.info(
                    "[spacy-llama] NER.v2: %d answer(s) for %s overlap another: %s",
                    len(overlaps),
                    doc_label(doc),
                    "; ".join(repr(p["text"]) for p in overlaps),
                )
            self._merge(doc, spans)


@llama_tasks("spacy-llama.NER.v2")
def ner_task_v2(
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
    overlaps_attr: str = "llama_ner_overlaps",
    max_span_tokens: int = DEFAULT_MAX_SPAN_TOKENS,
    max_entities: Optional[int] = 32,
    on_overflow: Overflow = "truncate",
) -> NERv2Task:
    """Generative NER with a JSON answer constrained to the labels and the doc's text."""
    check_names(overlaps_attr=overlaps_attr)
    if not spans_key:
        raise FewShotError(Errors.E318)
    if max_span_tokens < 1:
        raise SchemaError(Errors.E367.format(task=NAME, value=max_span_tokens))
    check_max_items(NAME, "max_entities", max_entities)
    return NERv2Task(
        load_template(template, template_path, "ner_v2.jinja"),
        max_span_tokens=max_span_tokens,
        max_entities=max_entities,
        labels=config_labels(labels, verbalizers, label_definitions),
        spec=LabelSpec(verbalizers, label_definitions),
        examples=list(examples or []),
        chat=chat,
        system=system,
        merge=merge,
        spans_key=spans_key,
        unaligned_attr=overlaps_attr,
        on_overflow=on_overflow,
    )


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _n_e_rv2_task_generates_entities: Type[GeneratesEntities] = NERv2Task
