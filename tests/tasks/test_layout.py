"""Requests say which doc and which question they ask (tasks/layout.py): every task stamps
them as its ``layout`` says, and results reach their docs through that layout, whatever
order the requests are built in."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import pytest
import spacy
from spacy.tokens import Doc

from spacy_llama.errors import TaskLayoutError
from spacy_llama.tasks.layout import Asked, asked, match
from spacy_llama.tasks.prompt import DocLike
from spacy_llama.tasks.textcat import TextCatTask
from spacy_llama.types import ScoreResult

TEXTS = ["Stocks fell on Monday.", "The match ended in a draw.", "Rain is coming."]


def test_match_groups_answers_by_doc_and_question_not_by_position() -> None:
    layout = [Asked(None, 1), Asked(1, 1), Asked(0, 0), Asked(None, 0), Asked(1, 0), Asked(0, 1)]
    got = match(layout, ["p1", "d1q1", "d0q0", "p0", "d1q0", "d0q1"], 3, task="T")
    assert got.docs == [["d0q0", "d0q1"], ["d1q0", "d1q1"], []]
    assert got.probes_of(0) == ["p0"] and got.probes_of(1) == ["p1"] and got.probes_of(2) == []


def test_match_refuses_answers_that_do_not_line_up() -> None:
    with pytest.raises(TaskLayoutError, match=r"\[E960\] T: 1 results for its 2 requests"):
        match([Asked(0), Asked(1)], ["a"], 2, task="T")
    with pytest.raises(TaskLayoutError, match=r"\[E961\] T: .*\(2, 0\).*2 docs"):
        match([Asked(0), Asked(2)], ["a", "b"], 2, task="T")
    with pytest.raises(TaskLayoutError, match=r"\[E961\].*asked twice"):
        match([Asked(0), Asked(0)], ["a", "b"], 1, task="T")


def _pipe(path: Any, task: Dict[str, Any]) -> Any:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
            "task": {"chat": False, **task} if "Surprisal" not in task["@llama_tasks"] else task,
            "generation": {"max_new_tokens": 4},
        },
    )
    return nlp


def _docs(nlp: Any, *, ents: bool = False) -> List[Doc]:
    docs = [nlp.make_doc(t) for t in TEXTS]
    if ents:
        docs[0].ents = [docs[0].char_span(0, 6, label="ORG")]
        docs[2].ents = [docs[2].char_span(0, 4, label="ORG"), docs[2].char_span(8, 14, "ORG")]
    return docs


TEXTCAT = {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": ["business", "sport"]}
V2 = {**TEXTCAT, "@llama_tasks": "spacy-llama.TextCat.v2"}
REVIEW = {"@llama_tasks": "spacy-llama.EntityReview.v1", "labels": ["COMPANY", "CITY"]}
CASES = {
    "textcat": (TEXTCAT, False),
    "textcat-calibrated-multi-label": ({**TEXTCAT, "calibrate": True, "exclusive": False}, False),
    "v2-three-probes-multi-label": ({**V2, "exclusive": False}, False),
    "review-calibrated": ({**REVIEW, "calibrate": True}, True),
    "completion": ({"@llama_tasks": "spacy-llama.Completion.v1"}, False),
    "ner": ({"@llama_tasks": "spacy-llama.NER.v1", "labels": ["ORG"]}, False),
    "surprisal": ({"@llama_tasks": "spacy-llama.Surprisal.v1"}, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_request_is_stamped_with_what_it_asks(tiny_hf, case) -> None:
    task_cfg, ents = CASES[case]
    nlp = _pipe(tiny_hf, task_cfg)
    task = nlp.get_pipe("llama").task
    docs = _docs(nlp, ents=ents)
    requests = task.requests(docs)
    stamps = [asked(r) for r in requests]
    if case.startswith(("textcat", "v2", "review")):  # they ask several questions per doc
        assert stamps == task.layout(docs)
    # each doc's requests are about that doc, and no two ask the same of one doc
    for req, (k, _) in zip(requests, stamps):
        if k is not None:
            assert TEXTS[k][:6] in getattr(req, "prompt", getattr(req, "text", "")), (k, req)
    asked_of_docs = [s for s in stamps if s.doc_index is not None]
    assert len(set(asked_of_docs)) == len(asked_of_docs)
    assert {s.doc_index for s in asked_of_docs} <= set(range(len(docs)))


class ReversedTextCat(TextCatTask):
    """TextCat asking about its docs last to first: nothing but the stamps says which
    answer is whose."""

    def _plan(self, docs: Sequence[Doc]) -> List[Tuple[Asked, DocLike]]:
        plan = super()._plan(docs)
        probes = [p for p in plan if p[0].doc_index is None]
        return probes + [p for p in plan if p[0].doc_index is not None][::-1]


def _fake_results(requests: Sequence[Any]) -> List[ScoreResult]:
    """Scores that name their doc and question: doc k, question q favours candidate
    (k + q) % 2 by k + 1 nats; probes favour nothing."""
    out = []
    for r in requests:
        win = (r.doc_index + r.question) % 2 if r.doc_index is not None else None
        values = [float(r.doc_index + 1) if j == win else 0.0 for j in range(2)]
        out.append(ScoreResult(values, values, [1, 1]))
    return out


@pytest.mark.parametrize("settings", [{}, {"exclusive": False, "calibrate": True}])
def test_results_reach_their_docs_through_the_stamps(tiny_hf, settings) -> None:
    """The same answers give the same cats whether the task asks in doc order or reversed."""
    cats = []
    for reverse in (False, True):
        task = _pipe(tiny_hf, {**TEXTCAT, **settings}).get_pipe("llama").task
        if reverse:
            task.__class__ = ReversedTextCat
        docs = _docs(spacy.blank("en"))
        requests = task.requests(docs)
        first_doc = [r.doc_index for r in requests if r.doc_index is not None][0]
        assert first_doc == (2 if reverse else 0)
        task.assign(docs, _fake_results(requests))
        cats.append([dict(d.cats) for d in docs])
    assert cats[0] == cats[1]
    # each doc got its own answers: doc 2 (3 nats for "business") is surer than doc 0 (1 nat)
    assert cats[0][2]["business"] > cats[0][0]["business"] > 0.5
