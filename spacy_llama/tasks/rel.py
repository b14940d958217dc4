"""``spacy-llama.REL.v1``: relations between the upstream entities (structured output).

The prompt lists ``doc.ents`` with their indexes; the answer is constrained JSON
``{"relations": [{"head": i, "relation": <a label>, "tail": j}]}`` whose indexes can only
name listed entities, and never the same one twice (one ``anyOf`` alternative per head,
its tail an ``enum`` of the other indexes: plain JSON Schema, which servers take too).
Relations go to ``doc._.<relations_attr>`` as spacy-llm's REL task writes them
(``{"head": i, "tail": j, "relation": label}``, indexes into ``doc.ents``); a repeated one
is dropped and logged. A doc with fewer than two entities gets no model call and an empty
list.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from spacy.tokens import Doc
from spacy.training import Example as SpacyExample

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import GenerationRequest, GenerationResult
from .base import ChatSetting, PromptedTask, PromptFormatter, doc_label
from .extensions import check_names, install_extensions
from .fitting import Overflow, generation_requests
from .labels import Label, labels_context, make_labels
from .layout import Asked, ask
from .prompt import DocLike, PromptTemplate, load_template
from .saved import write_task
from .structured import FINISH_ATTR, check_max_items, json_constraint, read_answer

logger = logging.getLogger("spacy_llama")
NAME = "REL.v1"
Relation = Dict[str, Any]


def relations_schema(
    labels: Sequence[Label], n_ents: int, max_relations: Optional[int] = None
) -> Dict[str, Any]:
    """Relations whose head and tail index two different ones of ``n_ents`` entities (an
    ``anyOf`` per head, its tail an ``enum`` of the other indexes); none below two."""
    if n_ents < 2:
        relations: Dict[str, Any] = {"type": "array", "maxItems": 0}
    else:
        relation = {"type": "string", "enum": [x.answer for x in labels]}
        heads = [
            {
                "type": "object",
                "properties": {
                    "head": {"const": i},
                    "relation": relation,
                    "tail": {"type": "integer", "enum": [j for j in range(n_ents) if j != i]},
                },
                "required": ["head", "relation", "tail"],
                "additionalProperties": False,
            }
            for i in range(n_ents)
        ]
        relations = {"type": "array", "items": {"anyOf": heads}}
        if max_relations is not None:  # bounds the answer: a model repeating itself ends
            relations["maxItems"] = max_relations
    return {
        "type": "object",
        "properties": {"relations": relations},
        "required": ["relations"],
        "additionalProperties": False,
    }


class RELTask(PromptedTask):
    def __init__(
        self,
        template: PromptTemplate,
        *,
        labels: List[Label],
        chat: ChatSetting,
        system: Optional[str],
        on_overflow: Overflow,
        relations_attr: str,
        max_relations: Optional[int] = None,
    ) -> None:
        self.template = template
        self.max_relations = max_relations
        self.labels = labels
        self.chat = chat
        self.system = system
        self.on_overflow = on_overflow
        self.relations_attr = relations_attr
        self._lookup = {x.answer: x.name for x in labels}
        install_extensions(doc=self.extensions)

    @property
    def extensions(self) -> List[str]:
        return [self.relations_attr, FINISH_ATTR]

    @property
    def label_names(self) -> List[str]:
        return [x.name for x in self.labels]

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        self._request(sample)  # a bad template fails when the pipeline is built

    def _request(self, doc: DocLike) -> GenerationRequest:
        ents = [{"index": i, "text": e.text, "label_": e.label_} for i, e in enumerate(doc.ents)]
        user = self.template.render_doc(doc, labels=labels_context(self.labels), entities=ents)
        req = self.formatter.format(user, chat=self.chat, system=self.system)
        req.constraint = json_constraint(
            relations_schema(self.labels, len(ents), self.max_relations)
        )
        return req

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        out: List[GenerationRequest] = []
        for k, doc in enumerate(docs):
            if len(doc.ents) < 2:  # nothing to relate: an empty prompt is no model call
                req = GenerationRequest(prompt="", label=doc_label(doc))
            else:
                [req] = generation_requests(
                    [doc], self._request, self.formatter, on_overflow=self.on_overflow
                )
            out.append(ask(req, Asked(k)))
        return out

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            if len(doc.ents) < 2 or res.finish_reason == "empty":
                doc._.set(self.relations_attr, [])
                continue
            value = read_answer(
                doc, res, relations_schema(self.labels, len(doc.ents), self.max_relations), NAME
            )
            if value is not None:  # else the doc is marked failed and nothing is written
                doc._.set(self.relations_attr, self._relations(doc, value["relations"]))

    def _relations(self, doc: Doc, answers: List[Dict[str, Any]]) -> List[Relation]:
        out: List[Relation] = []
        seen: Set[Tuple[int, int, str]] = set()
        for a in answers:
            rel = {"head": a["head"], "tail": a["tail"], "relation": self._lookup[a["relation"]]}
            key = (rel["head"], rel["tail"], rel["relation"])
            if key in seen:  # the schema cannot forbid repeats (no uniqueItems in grammars)
                logger.info(
                    "[spacy-llama] REL.v1: dropped a repeated %s in %s", rel, doc_label(doc)
                )
                continue
            seen.add(key)
            out.append(rel)
        return out

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """Micro P/R/F over (head, tail, relation), the entities compared by their character
        offsets (so predicted and gold may number their entities differently)."""
        tp = n_pred = n_gold = 0
        for ex in examples:
            pred = _triples(ex.predicted, ex.predicted._.get(self.relations_attr))
            gold = _triples(ex.reference, ex.reference._.get(self.relations_attr))
            tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"rel_micro_p": p, "rel_micro_r": r, "rel_micro_f": f}

    def to_disk(self, path: Any, *, exclude: Iterable[str] = ()) -> None:
        write_task(path, {"labels": labels_context(self.labels), "template": self.template.source})

    def from_disk(self, path: Any, *, exclude: Iterable[str] = ()) -> RELTask:
        return self  # everything a REL task knows comes from its config


def _triples(doc: Doc, rels: Optional[List[Relation]]) -> Set[Tuple[Any, ...]]:
    ents = list(doc.ents)
    out = set()
    for r in rels or []:
        if 0 <= r["head"] < len(ents) and 0 <= r["tail"] < len(ents):
            h, t = ents[r["head"]], ents[r["tail"]]
            out.add(((h.start_char, h.end_char), (t.start_char, t.end_char), r["relation"]))
    return out


@llama_tasks("spacy-llama.REL.v1")
def rel_task_v1(
    *,
    labels: List[str],
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    on_overflow: Overflow = "truncate",
    relations_attr: str = "llama_relations",
    max_relations: Optional[int] = 32,
) -> RELTask:
    """Relation extraction between the upstream entities, as constrained JSON."""
    check_names(relations_attr=relations_attr)
    if not labels:
        raise FewShotError(Errors.E368)
    check_max_items(NAME, "max_relations", max_relations)
    return RELTask(
        load_template(template, template_path, "rel.jinja"),
        labels=make_labels(labels, verbalizers=verbalizers, definitions=label_definitions),
        chat=chat,
        system=system,
        on_overflow=on_overflow,
        relations_attr=relations_attr,
        max_relations=max_relations,
    )
