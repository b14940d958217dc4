"""Labels from the training data: a trainable task built with ``labels = []`` takes them in
``initialize`` (doc.cats keys, or the gold entities' labels; sorted), keeps them through
to_disk / spacy.load / to_bytes, and without labels or data it fails clearly."""

from __future__ import annotations

import pytest
import spacy
from spacy.training import Example

from spacy_llama.errors import FewShotError, TrainingError

from .builders import (
    TEXTS,
    adapter_block,
    cat_examples,
    entity_examples,
    entity_nlp,
    textcat_nlp,
)

V2 = {"@llama_tasks": "spacy-llama.TextCat.v2", "calibrate": False}


@pytest.mark.parametrize("task", [{}, V2])
def test_textcat_labels_come_from_the_cats(tiny_hf, tmp_path, task) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), labels=[], **task)
    pipe = nlp.get_pipe("llama")
    nlp.initialize(lambda: cat_examples(nlp))
    assert pipe.task.label_names == ["neg", "pos"]
    want = [nlp(t).cats for t in TEXTS]
    assert set(want[0]) == {"neg", "pos"}
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("llama").task.label_names == ["neg", "pos"]
    assert [loaded(t).cats for t in TEXTS] == want
    fresh = textcat_nlp(tiny_hf, adapter=adapter_block(), labels=[], **task)
    fresh.get_pipe("llama").from_bytes(pipe.to_bytes())
    assert [fresh(t).cats for t in TEXTS] == want


def test_config_verbalizers_apply_to_labels_from_data(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), labels=[], verbalizers={"pos": "good"})
    nlp.initialize(lambda: cat_examples(nlp))
    assert [x.answer for x in nlp.get_pipe("llama").task.labels] == ["neg", "good"]


@pytest.mark.parametrize(
    "task,want",
    [
        ({"@llama_tasks": "spacy-llama.NER.v1"}, ["CITY", "COMPANY"]),
        ({"@llama_tasks": "spacy-llama.NER.v2"}, ["CITY", "COMPANY"]),
        ({"@llama_tasks": "spacy-llama.EntityReview.v1"}, ["CITY", "COMPANY"]),
        (
            {"@llama_tasks": "spacy-llama.EntityReview.v1", "none_label": "OTHER"},
            ["CITY", "COMPANY", "OTHER"],
        ),
    ],
)
def test_entity_labels_come_from_the_gold_entities(tiny_hf, tmp_path, task, want) -> None:
    nlp = entity_nlp(tiny_hf, {**task, "labels": []})
    nlp.initialize(lambda: entity_examples(nlp))
    assert [x.name for x in nlp.get_pipe("llama").task.labels] == want
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert [x.name for x in loaded.get_pipe("llama").task.labels] == want
    loaded("Apple is in London.")  # initialized: it predicts


@pytest.mark.parametrize(
    "task",
    [
        {"@llama_tasks": "spacy-llama.TextCat.v1"},
        {"@llama_tasks": "spacy-llama.TextCat.v2"},
        {"@llama_tasks": "spacy-llama.NER.v1"},
        {"@llama_tasks": "spacy-llama.NER.v2"},
        {"@llama_tasks": "spacy-llama.EntityReview.v1"},
    ],
)
def test_no_labels_without_an_adapter_is_a_config_error(tiny_hf, task) -> None:
    with pytest.raises(FewShotError, match=r"\[E530\].*at least one label.*adapter"):
        entity_nlp(tiny_hf, {**task, "labels": []}, adapter=False)


def test_no_labels_and_no_data_fail_clearly(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), labels=[])
    with pytest.raises(TrainingError, match=r"\[E531\].*no labels yet.*nlp\.initialize"):
        nlp("Some text.")
    with pytest.raises(TrainingError, match=r"\[E532\].*no training\s+examples"):
        nlp.get_pipe("llama").initialize()
    with pytest.raises(TrainingError, match=r"\[E532\]"):
        nlp.initialize()  # spaCy's placeholder "x y z" example is no training data
    egs = [Example(nlp.make_doc(t), nlp.make_doc(t)) for t in TEXTS]  # no cats
    with pytest.raises(TrainingError, match=r"\[E533\].*TextCatTask.*doc\.cats = \{\"sport\""):
        nlp.initialize(lambda: egs)


@pytest.mark.parametrize("name", ["spacy-llama.NER.v1", "spacy-llama.EntityReview.v1"])
def test_no_labels_and_no_gold_entities_fail_clearly(tiny_hf, name) -> None:
    nlp = entity_nlp(tiny_hf, {"@llama_tasks": name, "labels": []})
    egs = entity_examples(nlp, [("No names here.", [])])
    with pytest.raises(TrainingError, match=r"\[E534\].*Task.*doc\.ents = \[doc\.char_span"):
        nlp.initialize(lambda: egs)


def test_initialize_without_data_keeps_config_labels(tiny_hf) -> None:
    """``spacy assemble`` calls nlp.initialize() without data: with labels in the config
    there is nothing to check, and the pipeline predicts (the zero-shot baseline)."""
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    nlp.initialize()
    assert set(nlp(TEXTS[0]).cats) == {"pos", "neg"}
