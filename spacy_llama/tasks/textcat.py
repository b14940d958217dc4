"""``spacy-llama.TextCat.v1``/``.v2``: zero- and few-shot text classification by scoring labels.

No text is generated. Exclusive classes: one ScoreRequest per doc whose candidates are the
labels' verbalizers; the (optionally length-normalised) log-likelihoods go through a softmax
into ``doc.cats``. Multi-label: one yes/no ScoreRequest per (doc, label); ``doc.cats[label]``
is P(yes) renormalised over {yes, no}.

v1 scores each label's mean token log-prob (contextual calibration optional). v2 scores,
by default, the PMI of each label (its summed log-prob minus its mean after three
content-free texts, see calibration.py) with a plain prompt; ``label_score`` can also be
"mean" or "first_word". v3 is v2 subtracting 0.6 of the content-free baseline instead of
all of it (``prior_weight``), so no label is unreachable for its surface form's prior (see
calibration.py). v1 and v2 are kept exactly as released.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

from spacy.scorer import Scorer as SpacyScorer
from spacy.tokens import Doc
from spacy.training import Example as SpacyExample

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import ScoreRequest, ScoreResult
from .base import (
    ChatSetting,
    PromptedTask,
    PromptFormatter,
    ScoresLabels,
    TakesLabelsFromData,
    doc_label,
)
from .calibration import (
    check_label_score,
    check_prior_weight,
    content_free_texts,
    pmi,
    probe_doc,
    scored_parts,
)
from .data_labels import DataLabels, LabelSpec
from .examples import Example, example_name
from .fitting import Overflow, fit_doc, token_count
from .labels import Label, check_label, config_labels, labels_context, softmax
from .layout import Asked, ask, match
from .prompt import DocLike, PromptTemplate, content_free_doc, load_template

YES, NO = "yes", "no"


class TextCatTask(DataLabels, PromptedTask):
    """Scores label candidates (tasks/base.py's ``ScoresLabels``)."""

    prior_weight = 1.0  # the share of the content-free baseline subtracted (v3: a setting)

    def __init__(
        self,
        template: PromptTemplate,
        *,
        labels: List[Label],
        exclusive: bool,
        length_normalize: bool,
        examples: List[Example],
        chat: ChatSetting,
        system: Optional[str],
        candidate_prefix: Optional[str],
        threshold: float,
        on_overflow: Overflow,
        calibrate: bool = False,
        content_free: str = "N/A",
        spec: LabelSpec = LabelSpec(),
    ) -> None:
        self.template = template
        self.calibrate = calibrate
        self.content_free = content_free
        self.exclusive = exclusive
        self.length_normalize = length_normalize
        self.chat = chat
        self.system = system
        self.candidate_prefix = candidate_prefix  # None: chosen in initialize
        self.threshold = threshold
        self.on_overflow = on_overflow
        self._start(labels, examples, spec)  # no labels: they come from the training data
        self._limit = 0  # prompt tokens left once the longest candidate is appended
        self._check_label_count()

    def _labels_changed(self) -> None:
        self._check_label_count()

    def _check_label_count(self) -> None:
        """One exclusive label is a softmax over one answer: 1.0 whatever the doc."""
        if self.exclusive and len(self.labels) == 1:
            task = re.sub(r"V(\d)$", r".v\1", type(self).__name__[: -len("Task")])
            raise FewShotError(Errors.E830.format(task=task, label=self.labels[0].name))

    @property
    def extensions(self) -> List[str]:
        return []  # writes doc.cats only

    @property
    def assigns(self) -> List[str]:
        return ["doc.cats"]

    @property
    def label_names(self) -> List[str]:
        return [x.name for x in self.labels]

    def _check_examples(self, examples: List[Example]) -> List[Example]:
        """Each example names its labels as "label", "labels" or "cats" (values >= 0.5)."""
        known = {x.name: x for x in self.labels}
        out = []
        for i, ex in enumerate(examples):
            if "label" in ex:
                names = [ex["label"]]
            elif "labels" in ex:
                names = list(ex["labels"])
            elif "cats" in ex:
                names = [k for k, v in ex["cats"].items() if v >= 0.5]
            else:
                raise FewShotError(Errors.E322.format(example=example_name(ex, i)))
            if self.exclusive and len(names) != 1:
                raise FewShotError(
                    Errors.E323.format(example=example_name(ex, i), names=names)
                )
            found = [check_label(n, known, example_name(ex, i)) for n in names]
            out.append({"text": ex["text"], "labels": [x.name for x in found]})
        return out

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self.bind(formatter)
        # After a chat template's assistant header the answer starts the line; after a plain
        # "Category:" it follows a space.
        prefix = self.candidate_prefix
        self.prefix = prefix if prefix is not None else ("" if self.chat else " ")
        self._limit = formatter.budget - max(
            token_count(formatter, c) for c in self.candidates(self.labels[0])
        )
        self.requests([sample])  # a bad template fails when the pipeline is built

    def candidates(self, label: Label) -> List[str]:
        if self.exclusive:
            return [self.prefix + x.answer for x in self.labels]
        return [self.prefix + YES, self.prefix + NO]

    def _examples_for(self, label: Optional[Label]) -> List[Dict[str, str]]:
        answers = {x.name: x.answer for x in self.labels}
        if label is None:
            return [{"text": e["text"], "answer": answers[e["labels"][0]]} for e in self.examples]
        return [
            {"text": e["text"], "answer": YES if label.name in e["labels"] else NO}
            for e in self.examples
        ]

    def _request(self, doc: DocLike, label: Optional[Label]) -> ScoreRequest:
        extra: Dict[str, Any] = {"labels": labels_context(self.labels)}
        extra["examples"] = self._examples_for(label)
        if label is not None:
            extra["label"] = labels_context([label])[0]
        user = self.template.render_doc(doc, **extra)
        fmt = self.formatter.format(user, chat=self.chat, system=self.system)
        cands = self.candidates(label or self.labels[0])
        return ScoreRequest(fmt.prompt, cands, add_special_tokens=fmt.add_special_tokens)

    def _fits(self, req: ScoreRequest) -> bool:
        return token_count(self.formatter, req.prompt) <= self._limit

    def _questions(self) -> List[Optional[Label]]:
        """One question per doc (exclusive), or one yes/no question per label."""
        return [None] if self.exclusive else list(self.labels)

    def _probe_texts(self) -> List[str]:
        """The content-free texts of the calibration probes (none without calibration)."""
        return [self.content_free] if self.calibrate else []

    def _probe_doc(self, vocab: Any, text: str) -> DocLike:
        return content_free_doc(vocab, text)

    def _plan(self, docs: Sequence[Doc]) -> List[Tuple[Asked, DocLike]]:
        """What each request asks and the doc it asks about, in request order: per
        content-free text one probe per question (contextual calibration, Zhao et al.,
        2021: the same prompt around a content-free text measures the model's prior for
        each answer, which assign divides out), then each doc's questions."""
        questions = range(len(self._questions()))
        plan: List[Tuple[Asked, DocLike]] = []
        if docs:
            for text in self._probe_texts():
                probe = self._probe_doc(docs[0].vocab, text)
                plan += [(Asked(None, q), probe) for q in questions]
        return plan + [(Asked(k, q), doc) for k, doc in enumerate(docs) for q in questions]

    def layout(self, docs: Sequence[Doc]) -> List[Asked]:
        """What each request of ``requests(docs)`` asks (tasks/layout.py)."""
        return [where for where, _ in self._plan(docs)]

    def requests(self, docs: Sequence[Doc]) -> List[ScoreRequest]:
        questions = self._questions()
        out = []
        for where, doc in self._plan(docs):
            label = questions[where.question]
            if where.doc_index is None:  # a probe: short, nothing to fit
                req = self._request(doc, label)
            else:
                name = doc_label(doc)  # type: ignore[arg-type]
                req = fit_doc(
                    doc,
                    lambda d, lab=label: self._request(d, lab),  # type: ignore[misc]
                    self._fits,
                    on_overflow=self.on_overflow,
                    label=name,
                )
                req.label = name
            out.append(ask(req, where))
        return out

    def assign(self, docs: Sequence[Doc], results: Sequence[ScoreResult]) -> None:
        got = match(self.layout(docs), results, len(docs), task=type(self).__name__)
        priors = [self._prior(got.probes_of(q)) for q in range(len(self._questions()))]
        for doc, mine in zip(docs, got.docs):
            if self.exclusive:
                probs = softmax(self._calibrated(mine[0], priors[0]))
                doc.cats.update({x.name: p for x, p in zip(self.labels, probs)})
            else:
                for label, res, prior in zip(self.labels, mine, priors):
                    doc.cats[label.name] = softmax(self._calibrated(res, prior))[0]

    def _values(self, res: ScoreResult) -> List[float]:
        """Per candidate: the mean of its token log-probs (``length_normalize``), or the sum
        (TextCat.v2's ``first_word`` candidates are already cut to the first word)."""
        return list(res.means if self.length_normalize else res.sums)

    def _prior(self, probes: Sequence[ScoreResult]) -> Optional[List[float]]:
        """The content-free baseline: per candidate, the mean value over the probes."""
        if not probes:
            return None
        rows = [self._values(p) for p in probes]
        return [sum(col) / len(rows) for col in zip(*rows)]

    def _calibrated(self, res: ScoreResult, prior: Optional[List[float]]) -> List[float]:
        """The values less ``prior_weight`` times the baseline (v1, v2: all of it)."""
        return pmi(self._values(res), prior, self.prior_weight)

    def gold_candidates(self, reference: Doc) -> List[int]:
        """Per question, the index of the gold candidate: the best gold label (exclusive),
        or per label 0 for "yes" (gold >= 0.5) and 1 for "no"."""
        if self.exclusive:
            names = [x.name for x in self.labels]
            best = max(names, key=lambda n: reference.cats.get(n, 0.0))
            return [names.index(best)]
        return [0 if reference.cats.get(x.name, 0.0) >= 0.5 else 1 for x in self.labels]

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """spaCy's textcat scores (``cats_score``, ``cats_f_per_type``, ...)."""
        return SpacyScorer.score_cats(
            examples,
            "cats",
            labels=self.label_names,
            multi_label=not self.exclusive,
            threshold=self.threshold,
        )

    def _state(self) -> Dict[str, Any]:
        return {**super()._state(), "exclusive": self.exclusive}


class TextCatV2Task(TextCatTask):
    """TextCat.v2: ``label_score`` says which part of each answer is scored and how its token
    log-probs are aggregated; with ``calibrate`` the mean score of the same answer after each
    content-free text is subtracted (PMI, see calibration.py) before the softmax."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        label_score: str,
        calibrate: bool,
        content_free: List[str],
        **kwargs: Any,
    ) -> None:
        self.label_score = check_label_score(label_score)
        self.content_free_texts = content_free
        super().__init__(
            template,
            length_normalize=self.label_score == "mean",
            calibrate=calibrate,
            content_free=content_free[0] if content_free else "N/A",
            **kwargs,
        )

    def candidates(self, label: Label) -> List[str]:
        if not self.exclusive:
            return super().candidates(label)
        parts = scored_parts([x.answer for x in self.labels], self.label_score)
        return [self.prefix + x for x in parts]

    def _probe_texts(self) -> List[str]:
        """Per batch, one probe per content-free text (per question), then the docs'."""
        return list(self.content_free_texts) if self.calibrate else []

    def _probe_doc(self, vocab: Any, text: str) -> DocLike:
        return probe_doc(vocab, text)

    def _state(self) -> Dict[str, Any]:
        return {**super()._state(), "label_score": self.label_score}


class TextCatV3Task(TextCatV2Task):
    """TextCat.v3: v2 with ``prior_weight`` (the share of the content-free baseline that is
    subtracted; 1.0 is v2's full PMI)."""

    def __init__(self, template: PromptTemplate, *, prior_weight: float, **kwargs: Any) -> None:
        self.prior_weight = check_prior_weight(prior_weight)
        super().__init__(template, **kwargs)

    def _state(self) -> Dict[str, Any]:
        return {**super()._state(), "prior_weight": self.prior_weight}


@llama_tasks("spacy-llama.TextCat.v1")
def textcat_task_v1(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    exclusive: bool = True,
    length_normalize: bool = True,
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = True,
    system: Optional[str] = None,
    candidate_prefix: Optional[str] = None,
    threshold: Optional[float] = None,
    on_overflow: Overflow = "truncate",
    calibrate: bool = False,
    content_free: str = "N/A",
) -> TextCatTask:
    """Text classification from the model's label log-likelihoods (no generation)."""
    default = "textcat.jinja" if exclusive else "textcat_multilabel.jinja"
    return TextCatTask(
        load_template(template, template_path, default),
        labels=config_labels(labels, verbalizers, label_definitions),
        spec=LabelSpec(verbalizers, label_definitions),
        exclusive=exclusive,
        length_normalize=length_normalize,
        examples=list(examples or []),
        chat=chat,
        system=system,
        candidate_prefix=candidate_prefix,
        # As spaCy's textcat: exclusive classes are decided by argmax alone.
        threshold=threshold if threshold is not None else (0.0 if exclusive else 0.5),
        on_overflow=on_overflow,
        calibrate=calibrate,
        content_free=content_free,
    )


@llama_tasks("spacy-llama.TextCat.v2")
def textcat_task_v2(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    exclusive: bool = True,
    label_score: str = "sum",
    calibrate: bool = True,
    content_free: Union[str, List[str]] = ["N/A", "", "[MASK]"],  # noqa: B006 - read only
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = False,
    system: Optional[str] = None,
    candidate_prefix: Optional[str] = None,
    threshold: Optional[float] = None,
    on_overflow: Overflow = "truncate",
) -> TextCatV2Task:
    """Text classification from label log-likelihoods: by default the PMI of each label's
    summed log-probs against three content-free texts ("N/A", "", "[MASK]", averaged), with
    a plain (non-chat) prompt. The defaults were chosen on the dev half of corpus/gold.jsonl
    (benchmarks/EVAL.md): with SmolLM2 a chat reply starts a line, where a label such as
    "sport" is split into rare word pieces, and v1's length-normalised mean favours an answer
    whose later words follow from its first."""
    return TextCatV2Task(
        load_template(template, template_path, _default_template(exclusive)),
        **_v2_settings(
            labels, verbalizers, label_definitions, exclusive, label_score, calibrate,
            content_free, examples, chat, system, candidate_prefix, threshold, on_overflow,
        ),
    )  # fmt: skip


@llama_tasks("spacy-llama.TextCat.v3")
def textcat_task_v3(
    *,
    labels: List[str] = [],  # noqa: B006 - read only; empty: from the training data
    verbalizers: Dict[str, str] = {},  # noqa: B006 - read only
    label_definitions: Dict[str, str] = {},  # noqa: B006 - read only
    exclusive: bool = True,
    label_score: str = "sum",
    calibrate: bool = True,
    prior_weight: float = 0.6,
    content_free: Union[str, List[str]] = ["N/A", "", "[MASK]"],  # noqa: B006 - read only
    examples: Optional[List[Dict[str, Any]]] = None,
    template: Optional[str] = None,
    template_path: Optional[str] = None,
    chat: ChatSetting = False,
    system: Optional[str] = None,
    candidate_prefix: Optional[str] = None,
    threshold: Optional[float] = None,
    on_overflow: Overflow = "truncate",
) -> TextCatV3Task:
    """TextCat.v2 subtracting ``prior_weight`` (default 0.6) of the content-free baseline
    instead of all of it: with full PMI a label whose answer the model favours everywhere
    (SmolLM2: "business") was never predicted. The weight was chosen on the gold train and
    dev halves (benchmarks/CALIBRATION.md); the gold test half was only reported."""
    return TextCatV3Task(
        load_template(template, template_path, _default_template(exclusive)),
        prior_weight=prior_weight,
        **_v2_settings(
            labels, verbalizers, label_definitions, exclusive, label_score, calibrate,
            content_free, examples, chat, system, candidate_prefix, threshold, on_overflow,
        ),
    )  # fmt: skip


def _default_template(exclusive: bool) -> str:
    return "textcat.jinja" if exclusive else "textcat_multilabel.jinja"


def _v2_settings(
    labels: List[str], verbalizers: Dict[str, str], label_definitions: Dict[str, str],
    exclusive: bool, label_score: str, calibrate: bool, content_free: Union[str, List[str]],
    examples: Optional[List[Dict[str, Any]]], chat: ChatSetting, system: Optional[str],
    candidate_prefix: Optional[str], threshold: Optional[float], on_overflow: Overflow,
) -> Dict[str, Any]:
    """The settings TextCat.v2 and v3 build their task from (v3 adds ``prior_weight``)."""
    return dict(
        labels=config_labels(labels, verbalizers, label_definitions),
        spec=LabelSpec(verbalizers, label_definitions),
        exclusive=exclusive,
        label_score=label_score,
        calibrate=calibrate,
        content_free=content_free_texts(content_free, calibrate),
        examples=list(examples or []),
        chat=chat,
        system=system,
        candidate_prefix=candidate_prefix,
        threshold=threshold if threshold is not None else (0.0 if exclusive else 0.5),
        on_overflow=on_overflow,
    )  # fmt: skip


if TYPE_CHECKING:  # mypy checks that the task has its capabilities (tasks/base.py)
    _text_cat_task_scores_labels: Type[ScoresLabels] = TextCatTask
    _text_cat_task_takes_labels_from_data: Type[TakesLabelsFromData] = TextCatTask
    _text_cat_v2_task_scores_labels: Type[ScoresLabels] = TextCatV2Task
    _text_cat_v2_task_takes_labels_from_data: Type[TakesLabelsFromData] = TextCatV2Task
    _text_cat_v3_task_scores_labels: Type[ScoresLabels] = TextCatV3Task
    _text_cat_v3_task_takes_labels_from_data: Type[TakesLabelsFromData] = TextCatV3Task
