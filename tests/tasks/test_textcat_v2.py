"""spacy-llama.TextCat.v2 (PMI against content-free prompts, label_score) and the pin that
TextCat.v1 is unchanged."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
import srsly

from spacy_llama.errors import FewShotError
from spacy_llama.generation import scoring
from spacy_llama.generation.scoring import Scorer
from spacy_llama.registry import llama_tasks
from spacy_llama.tasks.calibration import scored_parts
from spacy_llama.tasks.labels import softmax
from spacy_llama.tasks.textcat import textcat_task_v2
from spacy_llama.types import ScoreRequest, ScoreResult

ROOT = Path(__file__).resolve().parents[2]
# Labels of different word counts, as in the collapse this task fixes.
LABELS = ["business", "sport", "science and technology", "politics"]
NA = "Text: N/A\nCategory:"
# The default content-free texts ("N/A", "", "[MASK]") as they end a plain prompt.
PROBES = (NA, "Text: \nCategory:", "Text: [MASK]\nCategory:")


def nlp_with(path: Path, version: str, **task: Any) -> spacy.Language:
    nlp = spacy.blank("en")
    config = {"@llama_tasks": f"spacy-llama.TextCat.{version}", "labels": LABELS, **task}
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"}
    nlp.add_pipe(
        "llama", config={"model": model, "task": config, "generation": {"max_new_tokens": 1}}
    )
    return nlp


def result(sums: List[float], n_tokens: List[int]) -> ScoreResult:
    return ScoreResult(
        sums=list(sums), means=[s / n for s, n in zip(sums, n_tokens)], n_tokens=list(n_tokens)
    )


# A doc where v1 collapses: "science and technology" has three tokens whose later two follow
# from the first, so its mean (-1.0) beats every one-token label although its sum is lowest.
DOC = result([-2.0, -2.5, -3.0, -2.6], [1, 1, 3, 1])
# The same answers after the content-free "N/A": business and the long label look likely
# without any text at all.
PRIOR = result([-1.0, -3.0, -2.8, -2.0], [1, 1, 3, 1])
PMI = [-1.0, 0.5, -0.2, -0.6]  # DOC.sums - PRIOR.sums: sport carries the text's information


def fake_scorer(monkeypatch: pytest.MonkeyPatch, seen: List[ScoreRequest]) -> None:
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        seen.extend(requests)
        return [PRIOR if r.prompt.endswith(PROBES) else DOC for r in requests]

    monkeypatch.setattr(scoring.Scorer, "score", score)


def test_v2_is_pmi_of_summed_logprobs_where_v1_picks_the_multi_word_label(tiny_hf, monkeypatch):
    seen: List[ScoreRequest] = []
    fake_scorer(monkeypatch, seen)
    v1 = nlp_with(tiny_hf, "v1")("A striker scored twice.")
    assert max(v1.cats, key=v1.cats.get) == "science and technology"
    v2_nlp = nlp_with(tiny_hf, "v2")
    seen.clear()
    v2 = v2_nlp("A striker scored twice.")
    # the three content-free probes, then the doc; plain prompt, candidates after a space
    assert [r.prompt.endswith(p) for r, p in zip(seen, PROBES)] == [True] * 3
    assert len(seen) == 4 and not seen[3].prompt.endswith(PROBES)
    assert seen[3].candidates == [" " + x for x in LABELS]
    assert max(v2.cats, key=v2.cats.get) == "sport"
    expected = softmax(PMI)
    for label, p in zip(LABELS, expected):
        assert v2.cats[label] == pytest.approx(p, abs=1e-12)
    # and the values are not v1's arithmetic (softmax of means) nor v1's calibration
    v1_cal = softmax([m - b for m, b in zip(DOC.means, PRIOR.means)])
    assert v2.cats["sport"] != pytest.approx(v1_cal[1])
    assert v2.cats["sport"] != pytest.approx(v1.cats["sport"])


def test_v2_label_score_mean_and_raw(tiny_hf, monkeypatch):
    fake_scorer(monkeypatch, [])
    mean = nlp_with(tiny_hf, "v2", label_score="mean")("x")
    want = softmax([m - b for m, b in zip(DOC.means, PRIOR.means)])
    assert [mean.cats[x] for x in LABELS] == pytest.approx(want)
    raw = nlp_with(tiny_hf, "v2", calibrate=False)("x")
    assert [raw.cats[x] for x in LABELS] == pytest.approx(softmax(DOC.sums))


def test_v2_first_word_scores_the_distinguishing_words(tiny_hf, monkeypatch):
    seen: List[ScoreRequest] = []
    fake_scorer(monkeypatch, seen)
    nlp_with(tiny_hf, "v2", label_score="first_word")("x")
    assert seen[-1].candidates == [" business", " sport", " science", " politics"]
    assert scored_parts(["world news", "world sport", "sport"], "first_word") == [
        "world news",
        "world sport",
        "sport",
    ]
    assert scored_parts(["sport", "sport business"], "first_word") == ["sport", "sport business"]
    assert scored_parts(["a  b", "a b"], "first_word") == ["a  b", "a b"]
    assert scored_parts(["arts and culture", "arts"], "sum") == ["arts and culture", "arts"]


def test_v2_averages_several_content_free_texts(tiny_hf, monkeypatch):
    empty = result([-3.0, -1.0, -2.0, -4.0], [1, 1, 3, 1])

    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        out = []
        for r in requests:
            if r.prompt.endswith("Text: N/A\nCategory:"):
                out.append(PRIOR)
            elif r.prompt.endswith("Text: \nCategory:"):
                out.append(empty)
            else:
                out.append(DOC)
        return out

    monkeypatch.setattr(scoring.Scorer, "score", score)
    nlp = nlp_with(tiny_hf, "v2", content_free=["N/A", ""])
    reqs = nlp.get_pipe("llama").task.requests([nlp.make_doc("a"), nlp.make_doc("b")])
    assert len(reqs) == 4  # two probes per batch, then one request per doc
    docs = list(nlp.pipe(["a", "b"]))
    base = [(p + e) / 2 for p, e in zip(PRIOR.sums, empty.sums)]
    want = softmax([v - b for v, b in zip(DOC.sums, base)])
    for doc in docs:
        assert [doc.cats[x] for x in LABELS] == pytest.approx(want)


def test_v2_multilabel_yes_no_with_pmi(tiny_hf, monkeypatch):
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        out = []
        for r in requests:
            yes = -0.5 if "Text: N/A\n" in r.prompt else (-0.2 if "sport?" in r.prompt else -2.0)
            assert "Text: [MASK]" not in r.prompt  # content_free = "N/A" below
            out.append(ScoreResult(sums=[yes, -1.0], means=[yes, -1.0], n_tokens=[1, 1]))
        return out

    monkeypatch.setattr(scoring.Scorer, "score", score)
    nlp = nlp_with(tiny_hf, "v2", exclusive=False, content_free="N/A")
    reqs = nlp.get_pipe("llama").task.requests([nlp.make_doc("A match.")])
    assert len(reqs) == 2 * len(LABELS)  # a probe per label question, then the doc's
    assert all(r.candidates == [" yes", " no"] for r in reqs)
    doc = nlp("A match.")
    assert doc.cats["sport"] == pytest.approx(softmax([-0.2 + 0.5, 0.0])[0])
    assert doc.cats["business"] == pytest.approx(softmax([-2.0 + 0.5, 0.0])[0])


def test_v2_keeps_fewshot_verbalizers_definitions_and_saves(tiny_hf, monkeypatch, tmp_path):
    fake_scorer(monkeypatch, [])
    nlp = nlp_with(
        tiny_hf,
        "v2",
        label_score="first_word",
        verbalizers={"science and technology": "science or technology"},
        label_definitions={"sport": "games and athletes"},
        examples=[{"text": "New phone.", "label": "science and technology"}],
    )
    task = nlp.get_pipe("llama").task
    req = task.requests([nlp.make_doc("x")])[3]  # after the three probes
    assert "- sport: games and athletes\n" in req.prompt
    assert "Text: New phone.\nCategory: science or technology\n" in req.prompt
    assert req.candidates == [" business", " sport", " science", " politics"]
    nlp.to_disk(tmp_path / "pipe")
    saved = srsly.read_json(tmp_path / "pipe" / "llama" / "task" / "task.json")
    assert saved["label_score"] == "first_word"
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.get_pipe("llama").task.examples == task.examples


def test_v2_on_the_tiny_model_equals_pmi_of_direct_scores(tiny_hf):
    nlp = nlp_with(tiny_hf, "v2")
    pipe = nlp.get_pipe("llama")
    doc = nlp("Stocks fell on Monday.")
    reqs = pipe.task.requests([nlp.make_doc(doc.text)])
    assert [r.prompt.endswith(p) for r, p in zip(reqs, PROBES)] == [True] * 3
    *priors, res = Scorer(pipe.model, batch_size=8).score(reqs)
    base = [sum(col) / 3 for col in zip(*(p.sums for p in priors))]
    want = softmax([s - b for s, b in zip(res.sums, base)])
    assert [doc.cats[x] for x in LABELS] == pytest.approx(want, abs=1e-4)


def test_v2_bad_settings(tiny_hf):
    with pytest.raises(FewShotError, match=r"E330.*label_score = 'max'"):
        nlp_with(tiny_hf, "v2", label_score="max")
    with pytest.raises(FewShotError, match="E331"):
        nlp_with(tiny_hf, "v2", content_free=[])
    nlp_with(tiny_hf, "v2", content_free=[], calibrate=False)  # nothing to subtract: fine
    with pytest.raises(FewShotError, match="E332"):  # a direct call: no config validation
        textcat_task_v2(labels=LABELS, content_free=["N/A", None])  # type: ignore[list-item]


# -- TextCat.v1 is unchanged ------------------------------------------------------------------
V1_DEFAULTS: Dict[str, Any] = {
    "verbalizers": {},
    "label_definitions": {},
    "exclusive": True,
    "length_normalize": True,
    "examples": None,
    "template": None,
    "template_path": None,
    "chat": True,
    "system": None,
    "candidate_prefix": None,
    "threshold": None,
    "on_overflow": "truncate",
    "calibrate": False,
    "content_free": "N/A",
}


def test_v1_defaults_and_outputs_are_unchanged(tiny_hf):
    make = llama_tasks.get("spacy-llama.TextCat.v1")
    params = inspect.signature(make).parameters
    assert {k: p.default for k, p in params.items() if k != "labels"} == V1_DEFAULTS
    for calibrate in (False, True):
        nlp = nlp_with(tiny_hf, "v1", calibrate=calibrate)
        pipe = nlp.get_pipe("llama")
        doc = nlp("Stocks fell on Monday.")
        reqs = pipe.task.requests([nlp.make_doc(doc.text)])
        assert len(reqs) == 1 + calibrate and reqs[-1].candidates == LABELS  # chat: no space
        scores = Scorer(pipe.model, batch_size=8).score(reqs)
        values = scores[-1].means
        if calibrate:  # v1's calibration subtracts the content-free means
            values = [v - b for v, b in zip(values, scores[0].means)]
        exps = [math.exp(v - max(values)) for v in values]
        for label, e in zip(LABELS, exps):
            assert doc.cats[label] == pytest.approx(e / sum(exps), abs=1e-4)
