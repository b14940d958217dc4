"""``spacy-llama.EntityReview.v1``: score candidate labels for every upstream entity.

One ScoreRequest per reviewed entity: the doc (or the entity's sentence) with the entity
named, and the label verbalizers as candidates. The softmax over their log-likelihoods goes to
``span._.llama_scores`` and the best label to ``span._.llama_label``. With ``relabel`` the
entity's label is replaced when another label's probability reaches ``threshold``. Entities
are only removed with ``delete_none`` (when ``none_label`` wins): never silently.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Literal,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
)

from spacy.scorer import Scorer as SpacyScorer
from spacy.tokens import Doc, Span
from spacy.training import Example as SpacyExample

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import ScoreRequest, ScoreResult
from .base import (
    ChatSetting,
    PromptedTask,
    PromptFormatter,
    ReviewsEntities,
    TakesLabelsFromData,
    doc_label,
)
from .data_labels import DataLabels, LabelSpec
from .examples import Example, check_entity_examples
from .extensions import check_names, install_extensions
from .fitting import Overflow, fit_doc, token_count
from .labels import Label, config_labels, labels_context, softmax
from .layout import Asked, ask, match
from .prompt import DocLike, PromptTemplate, content_free_doc, load_template

Context = Literal["doc", "sentence"]


class EntityReviewTask(DataLabels, PromptedTask):
    """Reviews entities (tasks/base.py's ``ReviewsEntities``)."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        labels: List[Label],
        none_label: Optional[str],
        review_labels: Optional[List[str]],
        relabel: bool,
        threshold: float,
        delete_none: bool,
        length_normalize: bool,
        examples: List[Example],
        chat: ChatSetting,
        system: Optional[str],
        candidate_prefix: Optional[str],
        context: Context,
        on_overflow: Overflow,
        label_attr: str,
        scores_attr: str,
        calibrate: bool = False,
        content_free: str = "N/A",
        spec: LabelSpec = LabelSpec(),
    ) -> None:
        self.template = template
        self.calibrate = calibrate
        self.content_free = content_free
        self.none_label = none_label
        self.review_labels = set(review_labels) if review_labels is not None else None
        self.relabel = relabel
        self.threshold = threshold
        self.delete_none = delete_none
        self.length_normalize = length_normalize
        self.chat = chat
        self.system = system
        self.candidate_prefix = candidate_prefix
        self.context = context
        self.on_overflow = on_overflow
        self.label_attr = label_attr
        self.scores_attr = scores_attr
        # The labels include none_label, last, when given; none at all: from the training data.
        self._start(labels, examples, spec)
        self._limit = 0
        install_extensions(span=self.extensions)

    @property
    def extensions(self) -> List[str]:
        return [self.label_attr, self.scores_attr]

    @property
    def assigns(self) -> List[str]:
        """What it writes, in spaCy's notation: Span extensions, and ``doc.ents`` when it
        may relabel or remove entities."""
        out = [f"span._.{self.label_attr}", f"span._.{self.scores_attr}"]
        return out + (["doc.ents"] if self.relabel or self.delete_none else [])

    @property
    def label_names(self) -> List[str]:
        return self.entity_labels

    @property
    def entity_labels(self) -> List[str]:
        """The labels an entity can end up with (not the "none of these" answer)."""
        return [x.name for x in self.labels if x.name != self.none_label]

    def _check_examples(self, examples: List[Example]) -> List[Example]:
        return check_entity_examples(examples, self.labels, require_in_text=True)

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        # After a chat template's assistant header the answer starts the line; after a plain
        # prompt it follows a space.
        prefix = self.candidate_prefix
        self.prefix = prefix if prefix is not None else ("" if self.chat else " ")
        self._limit = formatter.budget - max(token_count(formatter, c) for c in self.candidates)
        probe = sample[0:1] if len(sample) else sample[0:0]
        self._request(sample, probe)  # a bad template fails when the pipeline is built

    @property
    def candidates(self) -> List[str]:
        return [self.prefix + x.answer for x in self.labels]

    def reviewed(self, doc: Doc) -> List[Span]:
        """The entities reviewed, in order (recomputed in assign: doc.ents has not changed)."""
        return [e for e in doc.ents if self.review_labels is None or e.label_ in self.review_labels]

    def _request(self, doc: DocLike, ent: Span) -> ScoreRequest:
        user = self.template.render_doc(
            doc,
            labels=labels_context(self.labels),
            examples=self.examples,
            entity={"text": ent.text, "label_": ent.label_},
        )
        fmt = self.formatter.format(user, chat=self.chat, system=self.system)
        return ScoreRequest(fmt.prompt, self.candidates, add_special_tokens=fmt.add_special_tokens)

    def _fits(self, req: ScoreRequest) -> bool:
        return token_count(self.formatter, req.prompt) <= self._limit

    def _calibrating(self, docs: Sequence[Doc]) -> bool:
        return self.calibrate and any(self.reviewed(doc) for doc in docs)

    def _plan(self, docs: Sequence[Doc]) -> List[Tuple[Asked, DocLike, Span]]:
        """What each request asks, about which doc and entity, in request order: the
        calibration probe first (contextual calibration, Zhao et al., 2021: a content-free
        text and entity give the model's prior for each label, which assign divides out),
        then each doc's reviewed entities."""
        plan: List[Tuple[Asked, DocLike, Span]] = []
        if self._calibrating(docs):
            probe = content_free_doc(docs[0].vocab, self.content_free)
            plan.append((Asked(None), probe, probe[:]))
        for k, doc in enumerate(docs):
            plan += [(Asked(k, j), doc, ent) for j, ent in enumerate(self.reviewed(doc))]
        return plan

    def layout(self, docs: Sequence[Doc]) -> List[Asked]:
        """What each request of ``requests(docs)`` asks (tasks/layout.py)."""
        return [where for where, _, _ in self._plan(docs)]

    def requests(self, docs: Sequence[Doc]) -> List[ScoreRequest]:
        out = []
        for where, doc, ent in self._plan(docs):
            if where.doc_index is None:
                req = self._request(doc, ent)
            else:
                req = self._entity_request(doc, ent)  # type: ignore[arg-type]
            out.append(ask(req, where))
        return out

    def _entity_request(self, doc: Doc, ent: Span) -> ScoreRequest:
        name = doc_label(doc)
        req = self._request(doc, ent) if self.context == "doc" else None
        if req is None or not self._fits(req):
            # Too long (or asked for): the entity's sentence, cut after the entity.
            sent = ent.sent if doc.has_annotation("SENT_START") else doc[:]
            req = fit_doc(
                doc[sent.start : max(ent.end, sent.end)],
                lambda d, e=ent: self._request(d, e),  # type: ignore[misc]
                self._fits,
                on_overflow=self.on_overflow,
                label=f"entity {ent.text!r} of {name}",
            )
        req.label = f"entity {ent.text!r} of {name}"
        return req

    def assign(self, docs: Sequence[Doc], results: Sequence[ScoreResult]) -> None:
        got = match(self.layout(docs), results, len(docs), task=type(self).__name__)
        probes = got.probes_of(0)
        prior = self._values(probes[0]) if probes else [0.0] * len(self.labels)
        for doc, answers in zip(docs, got.docs):
            answer = {(e.start, e.end): res for e, res in zip(self.reviewed(doc), answers)}
            ents = []
            for ent in doc.ents:
                res = answer.get((ent.start, ent.end))
                if res is None:  # not reviewed
                    ents.append(ent)
                    continue
                values = [v - p for v, p in zip(self._values(res), prior)]
                probs = dict(zip((x.name for x in self.labels), softmax(values)))
                best = max(probs, key=lambda k: probs[k])
                ent._.set(self.label_attr, best)
                ent._.set(self.scores_attr, probs)
                kept = self._decide(ent, best, probs[best])
                if kept is not None:
                    ents.append(kept)
            doc.ents = ents

    def _values(self, res: ScoreResult) -> List[float]:
        return list(res.means if self.length_normalize else res.sums)

    def review_targets(self, example: SpacyExample) -> Tuple[Doc, List[str]]:
        """What the task is trained on: the doc it is asked about (a copy of the predicted
        doc whose entities are the gold spans) and each gold span's target label, in the
        order ``requests`` asks (its questions).

        The entity's label in the prompt is the upstream one when the predicted doc has the
        same span (what inference sees), else the gold label. A gold label the task does not
        have is taught as ``none_label`` when there is one, and left out otherwise."""
        doc = example.predicted.copy()
        upstream = {(e.start_char, e.end_char): e.label_ for e in example.predicted.ents}
        names = {x.name for x in self.labels}
        spans: List[Span] = []
        targets = {}
        for ent in example.reference.ents:
            target = self._review_target(ent.label_, names)
            key = (ent.start_char, ent.end_char)
            shown = upstream.get(key, ent.label_)
            span = doc.char_span(*key, label=shown)
            if target is None or span is None:  # nothing to teach, or not on the doc's tokens
                continue
            spans.append(span)
            targets[(span.start, span.end)] = target
        doc.ents = spans
        return doc, [targets[(e.start, e.end)] for e in self.reviewed(doc)]

    def _review_target(self, gold: str, names: Set[str]) -> Optional[str]:
        if gold in names and gold != self.none_label:
            return gold
        return self.none_label

    def _decide(self, ent: Span, best: str, prob: float) -> Optional[Span]:
        """The entity as it leaves the review: unchanged, relabelled, or (if allowed) removed."""
        if best == ent.label_ or prob < self.threshold:
            return ent
        if best == self.none_label:
            return None if self.delete_none else ent
        if self.relabel:
            relabelled = Span(ent.doc, ent.start, ent.end, label=best)
            # span extension values are keyed by the label too: carry them over
            for attr in (self.label_attr, self.scores_attr):
                relabelled._.set(attr, ent._.get(attr))
            return relabelled
        return ent

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """Entity P/R/F over this task's labels, plus the label accuracy on exact-match spans."""
        examples = list(examples)
        wanted = set(self.entity_labels)
        scores = SpacyScorer.score_spans(
            examples,
            "ents",
            getter=lambda doc, attr: [e for e in doc.ents if e.label_ in wanted],
            has_annotation=lambda doc: doc.has_annotation("ENT_IOB"),
        )
        hits = total = 0
        for ex in examples:
            gold = {(e.start_char, e.end_char): e.label_ for e in ex.reference.ents}
            for ent in ex.predicted.ents:
                label = gold.get((ent.start_char, ent.end_char))
                if label in wanted and ent._.get(self.label_attr) is not None:
                    total += 1
                    hits += ent._.get(self.label_attr) == label
        scores["llama_review_acc"] = hits / total if total else None
        scores["llama_review_n"] = total
        return scores


@llama_tasks("spacy-llama.EntityReview.v1")
def entity_review_task_v1(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    none_label: Optional[str] = None,
    review_labels: Optional[List[str]] = None,
    relabel: bool = False,
    threshold: float = 0.5,
    delete_none: bool = False,
    length_normalize: bool = True,
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    candidate_prefix: Optional[str] = None,
    context: Context = "doc",
    on_overflow: Overflow = "truncate",
    label_attr: str = "llama_label",
    scores_attr: str = "llama_scores",
    calibrate: bool = False,
    content_free: str = "N/A",
) -> EntityReviewTask:
    """Review upstream entities: label probabilities per entity, optional relabelling."""
    check_names(label_attr=label_attr, scores_attr=scores_attr)
    if none_label is not None and none_label in labels:
        raise FewShotError(Errors.E302.format(none_label=none_label))
    if delete_none and none_label is None:
        raise FewShotError(Errors.E303)
    extra = (none_label,) if none_label is not None else ()
    return EntityReviewTask(
        load_template(template, template_path, "entity_review.jinja"),
        labels=config_labels(list(labels) + list(extra) if labels else [], verbalizers,
                             label_definitions),
        spec=LabelSpec(verbalizers, label_definitions, extra),
        none_label=none_label,
        review_labels=review_labels,
        relabel=relabel,
        threshold=threshold,
        delete_none=delete_none,
        length_normalize=length_normalize,
        examples=list(examples or []),
        chat=chat,
        system=system,
        candidate_prefix=candidate_prefix,
        context=context,
        on_overflow=on_overflow,
        label_attr=label_attr,
        scores_attr=scores_attr,
        calibrate=calibrate,
        content_free=content_free,
    )


@llama_tasks("spacy-llama.EntityReview.v2")
def entity_review_task_v2(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    none_label: Optional[str] = None,
    review_labels: Optional[List[str]] = None,
    relabel: bool = False,
    threshold: float = 0.5,
    delete_none: bool = False,
    length_normalize: bool = True,
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    candidate_prefix: Optional[str] = None,
    context: Context = "doc",
    on_overflow: Overflow = "truncate",
    label_attr: str = "llama_label",
    scores_attr: str = "llama_scores",
    calibrate: bool = True,
    content_free: str = "N/A",
) -> EntityReviewTask:
    """EntityReview.v1 with ``calibrate = true`` by default: the label prior measured on a
    content-free entity ("N/A") is divided out. v1 at its defaults called every entity
    PERSON (205 of the 221 entities of the gold test half, at p ~0.6); chosen on the gold
    train + dev halves, see benchmarks/REVIEW.md."""
    return entity_review_task_v1(
        labels=labels, verbalizers=verbalizers, label_definitions=label_definitions,
        none_label=none_label, review_labels=review_labels, relabel=relabel,
        threshold=threshold, delete_none=delete_none, length_normalize=length_normalize,
        examples=examples, template=template, template_path=template_path, chat=chat,
        system=system, candidate_prefix=candidate_prefix, context=context,
        on_overflow=on_overflow, label_attr=label_attr, scores_attr=scores_attr,
        calibrate=calibrate, content_free=content_free,
    )  # fmt: skip


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _entity_review_task_reviews_entities: Type[ReviewsEntities] = EntityReviewTask
    _entity_review_task_takes_labels_from_data: Type[TakesLabelsFromData] = EntityReviewTask
