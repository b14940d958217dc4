"""spacy-llama.TextCat.v1: prompts, label scoring, doc.cats, few-shot examples, failures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy_llama.errors import FewShotError
from spacy_llama.generation import scoring
from spacy_llama.generation.scoring import Scorer
from spacy_llama.types import ScoreRequest, ScoreResult

from ..fixtures.helpers import tiny_model

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["business", "sport", "science_tech", "politics"]
SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}


def textcat_nlp(model: Dict[str, Any], **task: Any) -> spacy.Language:
    nlp = spacy.blank("en")
    config = {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": LABELS, **task}
    nlp.add_pipe(
        "llama",
        config={"model": model, "task": config, "generation": {"max_new_tokens": 1}},
    )
    return nlp


def annotated_doc(nlp: spacy.Language) -> Doc:
    """A doc with POS and entities set by hand, as upstream components would set them."""
    words = ["Apple", "buys", "a", "London", "startup", "."]
    return Doc(
        nlp.vocab,
        words=words,
        spaces=[True, True, True, True, False, False],
        pos=["PROPN", "VERB", "DET", "PROPN", "NOUN", "PUNCT"],
        ents=["B-ORG", "O", "O", "B-GPE", "O", "O"],
    )


def test_prompt_renders_labels_definitions_examples_pos_and_ents(tiny_hf, tmp_path):
    path = tmp_path / "shots.jsonl"
    srsly.write_jsonl(path, [{"text": "Rates rose.", "label": "business"}])
    template = (
        "{% for l in labels %}{{ l.answer }}={{ l.definition }};{% endfor %}\n"
        "{% for ex in examples %}{{ ex.text }} -> {{ ex.answer }}\n{% endfor %}"
        "{% for t in tokens %}{{ t.text }}/{{ t.pos_ }} {% endfor %}\n"
        "{% for e in ents %}{{ e.text }}:{{ e.label_ }} {% endfor %}\nCategory:"
    )
    nlp = textcat_nlp(
        tiny_model(tiny_hf),
        chat=False,
        template=template,
        verbalizers={"science_tech": "science"},
        label_definitions={"sport": "games and athletes"},
        examples={"@llama_readers": "spacy-llama.FewShotReader.v1", "path": str(path)},
    )
    task = nlp.get_pipe("llama").task
    req = task.requests([annotated_doc(nlp)])[0]
    assert req.prompt.splitlines() == [
        "business=;sport=games and athletes;science=;politics=;",
        "Rates rose. -> business",
        "Apple/PROPN buys/VERB a/DET London/PROPN startup/NOUN ./PUNCT ",
        "Apple:ORG London:GPE ",
        "Category:",
    ]
    assert req.candidates == [" business", " sport", " science", " politics"]
    assert req.add_special_tokens is True


def test_default_template_chat_prompt(tiny_hf):
    nlp = textcat_nlp(tiny_model(tiny_hf))
    req = nlp.get_pipe("llama").task.requests([nlp("Stocks fell on Monday.")])[0]
    assert "Classify the text into exactly one of these categories:" in req.prompt
    assert "Text: Stocks fell on Monday.\nCategory:" in req.prompt
    assert req.prompt.endswith("assistant:")  # the tiny chat template's generation prompt
    assert req.candidates == LABELS and req.add_special_tokens is False


def test_tiny_model_probabilities(tiny_hf):
    nlp = textcat_nlp(tiny_model(tiny_hf))
    docs = list(nlp.pipe(["Stocks fell on Monday.", "The team won the cup.", ""]))
    for doc in docs:
        assert set(doc.cats) == set(LABELS)
        assert sum(doc.cats.values()) == pytest.approx(1.0)
    # The cats are the softmax of the Scorer's mean log-likelihoods of the labels.
    task = nlp.get_pipe("llama").task
    res = Scorer(nlp.get_pipe("llama").model, batch_size=4).score(task.requests(docs[:1]))[0]
    exps = [math.exp(m) for m in res.means]
    for label, e in zip(LABELS, exps):
        assert docs[0].cats[label] == pytest.approx(e / sum(exps), abs=1e-4)


def fake_scores(values: List[float]):
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        return [
            ScoreResult(sums=[2 * v for v in values], means=list(values), n_tokens=[1] * 4)
            for _ in requests
        ]

    return score


@pytest.mark.parametrize("best", [0, 2, 3])
def test_argmax_is_best_scored_label(tiny_hf, monkeypatch, best):
    values = [-3.0, -2.0, -4.0, -5.0]
    values[best] = -0.5
    monkeypatch.setattr(scoring.Scorer, "score", fake_scores(values))
    doc = textcat_nlp(tiny_model(tiny_hf))("Anything at all.")
    assert max(doc.cats, key=doc.cats.get) == LABELS[best]
    total = sum(math.exp(v) for v in values)
    assert doc.cats[LABELS[best]] == pytest.approx(math.exp(-0.5) / total)


def test_length_normalize_false_uses_sums(tiny_hf, monkeypatch):
    values = [-1.0, -2.0, -3.0, -4.0]
    monkeypatch.setattr(scoring.Scorer, "score", fake_scores(values))
    doc = textcat_nlp(tiny_model(tiny_hf), length_normalize=False)("Text.")
    total = sum(math.exp(2 * v) for v in values)
    assert doc.cats["business"] == pytest.approx(math.exp(-2.0) / total)


def test_multilabel_yes_no(tiny_hf, monkeypatch):
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        # "yes" wins for the labels whose question mentions sport or politics.
        out = []
        for req in requests:
            yes = -0.1 if ("sport?" in req.prompt or "politics?" in req.prompt) else -3.0
            out.append(ScoreResult(sums=[yes, -1.0], means=[yes, -1.0], n_tokens=[1, 1]))
        return out

    monkeypatch.setattr(scoring.Scorer, "score", score)
    nlp = textcat_nlp(tiny_model(tiny_hf), exclusive=False)
    task = nlp.get_pipe("llama").task
    reqs = task.requests([nlp.make_doc("A minister at a match.")])
    assert len(reqs) == len(LABELS) and all(r.candidates == ["yes", "no"] for r in reqs)
    doc = nlp("A minister at a match.")
    assert doc.cats["sport"] == pytest.approx(1 / (1 + math.exp(-0.9)))
    assert doc.cats["business"] == pytest.approx(1 / (1 + math.exp(2.0)))
    gold = nlp.make_doc(doc.text)
    gold.cats = {"business": 0.0, "sport": 1.0, "science_tech": 0.0, "politics": 1.0}
    scores = task.score([Example(doc, gold)])
    assert scores["cats_micro_f"] == pytest.approx(1.0)


def test_fewshot_file_and_score(tiny_hf):
    reader = {
        "@llama_readers": "spacy-llama.FewShotReader.v1",
        "path": str(ROOT / "corpus" / "fewshot_textcat.jsonl"),
        "limit": 1,  # the tiny model's context is 256 tokens
    }
    nlp = textcat_nlp(tiny_model(tiny_hf), examples=reader)
    task = nlp.get_pipe("llama").task
    assert len(task.examples) == 1
    prompt = task.requests([nlp.make_doc("x")])[0].prompt
    first = srsly.read_jsonl(ROOT / "corpus" / "fewshot_textcat.jsonl").__next__()
    assert f"Text: {first['text']}\nCategory: business" in prompt
    gold = list(DocBin().from_disk(ROOT / "corpus" / "gold.spacy").get_docs(nlp.vocab))[:3]
    examples = [Example(nlp(d.text), d) for d in gold]
    scores = task.score(examples)
    assert set(scores["cats_f_per_type"]) == set(LABELS)
    assert 0.0 <= scores["cats_score"] <= 1.0


def test_cats_docbin_roundtrip(tiny_hf):
    nlp = textcat_nlp(tiny_model(tiny_hf))
    doc = nlp("Stocks fell on Monday.")
    db = DocBin(store_user_data=True, docs=[doc])
    back = list(DocBin().from_bytes(db.to_bytes()).get_docs(nlp.vocab))[0]
    assert back.cats == pytest.approx(doc.cats)


def test_pipeline_to_disk_keeps_examples(tiny_hf, tmp_path):
    nlp = textcat_nlp(
        tiny_model(tiny_hf), examples=[{"text": "Goal!", "label": "sport"}], chat=False
    )
    nlp.to_disk(tmp_path / "pipe")
    saved = srsly.read_json(tmp_path / "pipe" / "llama" / "task" / "task.json")
    assert saved["examples"] == [{"text": "Goal!", "labels": ["sport"]}]
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.get_pipe("llama").task.examples == saved["examples"]


def test_failure_modes(tiny_hf, tmp_path):
    with pytest.raises(FewShotError, match="Unknown label 'weather'"):
        textcat_nlp(tiny_model(tiny_hf), examples=[{"text": "Rain.", "label": "weather"}])
    with pytest.raises(FewShotError, match="at least one label"):
        textcat_nlp(tiny_model(tiny_hf), labels=[])
    with pytest.raises(FewShotError, match="exactly one label"):
        textcat_nlp(tiny_model(tiny_hf), examples=[{"text": "x", "labels": ["sport", "business"]}])
    with pytest.raises(FewShotError, match="unknown labels"):
        textcat_nlp(tiny_model(tiny_hf), verbalizers={"weather": "rain"})
    # issue 26: one exclusive label was 1.0 for every doc, silently
    with pytest.raises(FewShotError, match=r"E830.*'sport'.*exclusive = false"):
        textcat_nlp(tiny_model(tiny_hf), labels=["sport"])
    one = textcat_nlp(tiny_model(tiny_hf), labels=["sport"], exclusive=False)("A goal.")
    assert 0.0 < one.cats["sport"] < 1.0  # the multi-label question is P(yes)
    bad = tmp_path / "bad.jsonl"
    srsly.write_jsonl(bad, [{"label": "sport"}])
    with pytest.raises(FewShotError, match='no "text"'):
        textcat_nlp(
            tiny_model(tiny_hf),
            examples={"@llama_readers": "spacy-llama.FewShotReader.v1", "path": str(bad)},
        )
    # A doc with no entities (and no upstream NER at all) is classified like any other.
    doc = textcat_nlp(tiny_model(tiny_hf))("nothing named here")
    assert not doc.ents and sum(doc.cats.values()) == pytest.approx(1.0)


def test_yaml_examples(tiny_hf, tmp_path):
    path = tmp_path / "shots.yml"
    path.write_text("examples:\n  - text: The striker scored.\n    label: sport\n")
    nlp = textcat_nlp(
        tiny_model(tiny_hf),
        examples={"@llama_readers": "spacy-llama.FewShotReader.v1", "path": str(path)},
    )
    assert nlp.get_pipe("llama").task.examples == [
        {"text": "The striker scored.", "labels": ["sport"]}
    ]


def test_long_doc_is_fitted_with_the_model_tokenizer(tiny_hf):
    nlp = textcat_nlp(tiny_model(tiny_hf))
    pipe = nlp.get_pipe("llama")
    doc = nlp.make_doc("The quick brown fox jumps over the lazy dog. " * 60)
    with pytest.warns(UserWarning, match="truncated"):
        req = pipe.task.requests([doc])[0]
    longest = max(pipe.model.count_tokens(c, add_special_tokens=False) for c in req.candidates)
    assert pipe.model.count_tokens(req.prompt, add_special_tokens=False) + longest <= (
        pipe.model.context_length
    )
    nlp.get_pipe("llama").set_annotations([doc], pipe.predict([doc]))
    assert sum(doc.cats.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_smollm2_textcat_matches_direct_scoring(smollm2):
    nlp = textcat_nlp(SMOL, verbalizers={"science_tech": "science and technology"})
    gold = list(DocBin().from_disk(ROOT / "corpus" / "gold.spacy").get_docs(nlp.vocab))
    texts = [gold[i].text for i in (0, 40, 70, 100)]
    docs = list(nlp.pipe(texts))
    task = nlp.get_pipe("llama").task
    for doc in docs:
        assert set(doc.cats) == set(LABELS)
        assert sum(doc.cats.values()) == pytest.approx(1.0)
    # Recompute one doc's label scores with a plain forward pass per candidate.
    import torch

    req = task.requests(docs[:1])[0]
    means = []
    for cand in req.candidates:
        enc = smollm2.tokenizer(req.prompt + cand, add_special_tokens=False)
        ids = list(enc["input_ids"])
        n = len(ids) - len(smollm2.tokenizer(req.prompt, add_special_tokens=False)["input_ids"])
        with torch.inference_mode():
            logits = smollm2.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        lps = [float(logp[j - 1, ids[j]]) for j in range(len(ids) - n, len(ids))]
        means.append(sum(lps) / len(lps))
    exps = [math.exp(m) for m in means]
    for label, e in zip(LABELS, exps):
        assert docs[0].cats[label] == pytest.approx(e / sum(exps), abs=1e-3)


def test_calibration_divides_out_the_content_free_prior(tiny_hf, monkeypatch):
    prior, values = [-0.2, -3.0, -3.0, -3.0], [-0.5, -1.0, -3.0, -4.0]

    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        pick = [prior if "Text: N/A\n" in r.prompt else values for r in requests]
        return [ScoreResult(sums=v, means=v, n_tokens=[1] * 4) for v in pick]

    monkeypatch.setattr(scoring.Scorer, "score", score)
    nlp = textcat_nlp(tiny_model(tiny_hf), calibrate=True)
    reqs = nlp.get_pipe("llama").task.requests([nlp.make_doc("a"), nlp.make_doc("b")])
    assert len(reqs) == 3 and "Text: N/A\n" in reqs[0].prompt  # one probe per batch
    docs = list(nlp.pipe(["Stocks fell.", "Goal!"]))
    shifted = [math.exp(v - p) for v, p in zip(values, prior)]
    for doc in docs:
        assert max(doc.cats, key=doc.cats.get) == "sport"  # business only looked likely
        assert doc.cats["sport"] == pytest.approx(shifted[1] / sum(shifted))


def test_pipeline_bytes_round_trip_keeps_examples(tiny_hf):
    """to_bytes/from_bytes carry what to_disk/from_disk carry (the learned examples)."""
    nlp = textcat_nlp(
        tiny_model(tiny_hf), examples=[{"text": "Goal!", "label": "sport"}], chat=False
    )
    other = textcat_nlp(tiny_model(tiny_hf), chat=False)
    assert other.get_pipe("llama").task.examples == []
    other.get_pipe("llama").from_bytes(nlp.get_pipe("llama").to_bytes())
    assert other.get_pipe("llama").task.examples == [{"text": "Goal!", "labels": ["sport"]}]
    text = "The match ended 2-1 after extra time."
    assert other(text).cats == pytest.approx(nlp(text).cats)
    again = textcat_nlp(tiny_model(tiny_hf), chat=False)
    again.from_bytes(nlp.to_bytes())  # the whole pipeline, as spaCy does it
    assert again.get_pipe("llama").task.examples == nlp.get_pipe("llama").task.examples


def test_the_scorer_is_a_registered_swappable_function(tiny_hf):
    nlp = textcat_nlp(tiny_model(tiny_hf), chat=False)
    assert nlp.config["components"]["llama"]["scorer"] == {"@scorers": "spacy-llama.task_scorer.v1"}
    gold = nlp.make_doc("Goal!")
    gold.cats = {label: float(label == "sport") for label in LABELS}
    examples = [Example(nlp("Goal!"), gold)]
    assert "cats_macro_f" in nlp.get_pipe("llama").score(examples)
    # spaCy's own scorer in its place: it takes no task and gets none
    swapped = spacy.blank("en")
    swapped.add_pipe(
        "llama",
        config={
            "model": tiny_model(tiny_hf),
            "task": {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": LABELS, "chat": False},
            "generation": {"max_new_tokens": 1},
            "scorer": {"@scorers": "spacy.textcat_multilabel_scorer.v2"},
        },
    )
    scores = swapped.get_pipe("llama").score([Example(swapped("Goal!"), gold)], labels=LABELS)
    assert set(scores["cats_f_per_type"]) == set(LABELS)
