"""Training dispatches on what a task can do, through one table (training/capabilities.py):
each shipped task implements exactly the capability it is trained as, a custom task that
implements one trains with no change to spacy-llama, and one that implements none (or
two) is refused with a coded error when the pipeline is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import SGD

from spacy_llama.errors import TrainingError
from spacy_llama.registry import llama_tasks
from spacy_llama.tasks.base import (
    GeneratesAnswer,
    GeneratesEntities,
    PromptFormatter,
    ReviewsEntities,
    ScoresLabels,
)
from spacy_llama.tasks.extensions import install_extensions
from spacy_llama.tasks.layout import Asked, ask
from spacy_llama.tasks.prompt import DocLike
from spacy_llama.tasks.textcat import TextCatTask
from spacy_llama.training.capabilities import TABLE, capabilities_of, training_for
from spacy_llama.training.entity_losses import review_loss
from spacy_llama.training.losses import answer_loss, textcat_loss
from spacy_llama.types import GenerationRequest, GenerationResult

from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp
from .reference import reference_loss

LABELS = {"labels": ["A", "B"]}
SHIPPED = {
    "spacy-llama.TextCat.v1": (LABELS, ScoresLabels, textcat_loss),
    "spacy-llama.TextCat.v2": (LABELS, ScoresLabels, textcat_loss),
    "spacy-llama.TextCat.v3": (LABELS, ScoresLabels, textcat_loss),
    "spacy-llama.EntityReview.v1": (LABELS, ReviewsEntities, review_loss),
    "spacy-llama.EntityReview.v2": (LABELS, ReviewsEntities, review_loss),
    "spacy-llama.NER.v1": (LABELS, GeneratesEntities, answer_loss),
    "spacy-llama.NER.v2": (LABELS, GeneratesEntities, answer_loss),
    "spacy-llama.Completion.v1": ({}, GeneratesAnswer, answer_loss),
    "spacy-llama.Summary.v1": ({}, GeneratesAnswer, answer_loss),
}
UNTRAINED = {
    "spacy-llama.Surprisal.v1": {},
    "spacy-llama.REL.v1": {"labels": ["WORKS_FOR"]},
    "spacy-llama.Extract.v1": {"schema": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_task_has_exactly_its_capability(name) -> None:
    settings, capability, loss = SHIPPED[name]
    task = llama_tasks.get(name)(**settings)
    rows = capabilities_of(task)
    assert [row.capability for row in rows] == [capability]
    assert training_for(task).loss is loss


@pytest.mark.parametrize("name", sorted(UNTRAINED))
def test_tasks_without_a_loss_have_no_capability(name) -> None:
    task = llama_tasks.get(name)(**UNTRAINED[name])
    assert capabilities_of(task) == []
    with pytest.raises(TrainingError, match=r"\[E503\].*implements one of"):
        training_for(task, "llama")


def test_the_table_has_one_row_per_capability() -> None:
    capabilities = [row.capability for row in TABLE]
    assert capabilities == [ScoresLabels, ReviewsEntities, GeneratesEntities, GeneratesAnswer]


# -- a custom task that only implements the protocols -----------------------------------
class PlainTask:
    """A Task that subclasses nothing of spacy-llama: a one-line answer about each doc in
    ``doc._.echo``. It implements none of the training capabilities."""

    def __init__(self, attr: str = "echo") -> None:
        self.attr = attr
        self._formatter: Optional[PromptFormatter] = None
        install_extensions(doc=[attr])

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        self._formatter = formatter

    def requests(self, docs: Sequence[Doc]) -> List[GenerationRequest]:
        assert self._formatter is not None
        out = []
        for k, doc in enumerate(docs):
            req = self._formatter.format(f"Echo: {doc.text}\nAnswer:", chat=False, system=None)
            out.append(ask(req, Asked(k)))
        return out

    def assign(self, docs: Sequence[Doc], results: Sequence[GenerationResult]) -> None:
        for doc, res in zip(docs, results):
            doc._.set(self.attr, res.text)

    @property
    def extensions(self) -> List[str]:
        return [self.attr]

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> Any:
        return self


class EchoTask(PlainTask):
    """The same task, implementing ``GeneratesAnswer``: trained on ``doc._.echo``."""

    @property
    def answer_attr(self) -> str:
        return self.attr

    def gold_answer(self, reference: Doc) -> str:
        return str(reference._.get(self.attr))


class TwoWayTask(EchoTask):
    """GeneratesAnswer and ScoresLabels at once: which loss would train it?"""

    labels: List[Any] = []
    exclusive = True
    length_normalize = True
    prior_weight = 1.0
    threshold = 0.5

    def gold_candidates(self, reference: Doc) -> List[int]:
        return [0]


@llama_tasks("spacy-llama-test.Echo.v1")
def echo_task() -> EchoTask:
    return EchoTask()


@llama_tasks("spacy-llama-test.Plain.v1")
def plain_task() -> PlainTask:
    return PlainTask()


@llama_tasks("spacy-llama-test.TwoWay.v1")
def two_way_task() -> TwoWayTask:
    return TwoWayTask()


def _nlp(path: Path, task: str) -> Any:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
            "task": {"@llama_tasks": task},
            "generation": {"max_new_tokens": 4},
            "adapter": adapter_block(),
        },
    )
    return nlp


def _examples(nlp: Any, answers: Dict[str, str]) -> List[Example]:
    out = []
    for text, answer in answers.items():
        eg = Example(nlp.make_doc(text), nlp.make_doc(text))
        eg.reference._.set("echo", answer)
        out.append(eg)
    return out


def test_a_custom_task_implementing_a_capability_trains(tiny_hf) -> None:
    """Checked in initialize (its answers are its own attribute), its loss is the
    teacher-forced NLL of its own gold answer, and updates lower it."""
    torch.manual_seed(0)
    nlp = _nlp(tiny_hf, "spacy-llama-test.Echo.v1")
    pipe = nlp.get_pipe("llama")
    assert isinstance(pipe.task, GeneratesAnswer) and pipe.is_trainable
    egs = _examples(nlp, {TEXTS[0]: "a big city", TEXTS[1]: "a fox"})
    empty = _examples(nlp, {TEXTS[2]: ""})
    with pytest.raises(TrainingError, match=r"\[E508\].*EchoTask.*doc\._\.echo"):
        nlp.initialize(lambda: egs + empty)
    nlp.initialize(lambda: egs)
    with torch.no_grad():
        value, _ = pipe.get_loss(egs)
        want = reference_loss(pipe.task, pipe.model, pipe.adapter.peft, egs)
    assert value == pytest.approx(float(want), rel=1e-4)
    opt = SGD(0.05, L2=0.0, grad_clip=0.0)
    losses = [nlp.update(egs, sgd=opt)["llama"] for _ in range(6)]
    assert losses[-1] < losses[0] * 0.9, losses


def test_a_task_implementing_no_capability_is_refused_at_build(tiny_hf) -> None:
    with pytest.raises(TrainingError, match=r"\[E503\] Component 'llama'.*PlainTask"):
        _nlp(tiny_hf, "spacy-llama-test.Plain.v1")
    nlp = spacy.blank("en")  # without an adapter block it runs as any task does
    nlp.add_pipe("llama", config={"model": {"@llama_models": "spacy-llama.HF.v1",
        "path": str(tiny_hf), "device": "cpu"}, "task": {"@llama_tasks":
        "spacy-llama-test.Plain.v1"}, "generation": {"max_new_tokens": 2}})  # fmt: skip
    assert isinstance(nlp(TEXTS[0])._.echo, str)


def test_a_task_implementing_two_capabilities_is_refused_at_build(tiny_hf) -> None:
    with pytest.raises(TrainingError, match=r"\[E962\].*TwoWayTask.*ScoresLabels, GeneratesAnswer"):
        _nlp(tiny_hf, "spacy-llama-test.TwoWay.v1")


class ReversedTextCat(TextCatTask):
    """TextCat asking about its docs last to first (probes still first): only the requests'
    stamps say which values are whose."""

    def _plan(self, docs: Sequence[Doc]) -> List[Tuple[Asked, DocLike]]:
        plan = super()._plan(docs)
        probes = [p for p in plan if p[0].doc_index is None]
        return probes + [p for p in plan if p[0].doc_index is not None][::-1]


@pytest.mark.parametrize("settings", [{}, {"calibrate": True, "exclusive": False}])
def test_the_loss_matches_values_to_docs_through_the_stamps(tiny_hf, settings) -> None:
    """The same loss whatever order a task asks its docs in: the gold of doc k meets the
    values of the requests stamped k (index arithmetic would pair them with other docs')."""
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), **settings)
    pipe = nlp.get_pipe("llama")
    egs = cat_examples(nlp)
    with torch.no_grad():
        forward, _ = pipe.get_loss(egs)
        want = reference_loss(pipe.task, pipe.model, pipe.adapter.peft, egs)
        pipe.task.__class__ = ReversedTextCat
        assert pipe.task.requests([eg.predicted for eg in egs])[-1].doc_index == 0
        backward, _ = pipe.get_loss(egs)
    assert forward == pytest.approx(float(want), rel=1e-4)
    assert backward == pytest.approx(forward, rel=1e-5)
