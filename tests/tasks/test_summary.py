"""spacy-llama.Summary.v1: prompt, word budget, extension round trip, failures."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_llama.generation.engine import Engine
from spacy_llama.tasks.summary import clip_words
from spacy_llama.types import GenerationRequest, GenerationResult

from ..fixtures.helpers import tiny_model

SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}


def summary_nlp(model: Dict[str, Any], max_new_tokens: int = 16, **task: Any) -> spacy.Language:
    nlp = spacy.blank("en")
    config = {"@llama_tasks": "spacy-llama.Summary.v1", **task}
    nlp.add_pipe(
        "llama",
        config={"model": model, "task": config, "generation": {"max_new_tokens": max_new_tokens}},
    )
    return nlp


def annotated_doc(nlp: spacy.Language) -> Doc:
    return Doc(
        nlp.vocab,
        words=["Apple", "opened", "an", "office", "in", "London", "."],
        spaces=[True, True, True, True, True, False, False],
        pos=["PROPN", "VERB", "DET", "NOUN", "ADP", "PROPN", "PUNCT"],
        ents=["B-ORG", "O", "O", "O", "O", "B-GPE", "O"],
    )


def answer_with(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    def run(self: Engine, requests: List[GenerationRequest]) -> List[GenerationResult]:
        return [GenerationResult(text=text, finish_reason="stop") for _ in requests]

    monkeypatch.setattr(Engine, "run", run)


def test_default_prompt_has_budget_and_entities(tiny_hf):
    nlp = summary_nlp(tiny_model(tiny_hf), chat=False, max_words=12)
    req = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])[0]
    assert req.prompt.splitlines() == [
        "Summarize the text in at most 12 words.",
        "Key names: Apple, London",
        "",
        "Text: Apple opened an office in London.",
        "Summary:",
    ]


def test_custom_template_sees_pos(tiny_hf):
    template = "{% for t in tokens if t.pos_ == 'PROPN' %}{{ t.text }} {% endfor %}{{ max_words }}"
    nlp = summary_nlp(tiny_model(tiny_hf), chat=False, template=template, max_words=5)
    req = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])[0]
    assert req.prompt == "Apple London 5"


def test_clip_words():
    assert clip_words("One two three.", 5) == "One two three."
    assert clip_words("One two. Three four five six.", 4) == "One two."
    assert clip_words("one two three four five", 3) == "one two three"
    assert clip_words("  spaced\n\nout  ", 5) == "spaced out"


def test_answer_is_cleaned_and_clipped(tiny_hf, monkeypatch):
    answer_with(monkeypatch, "Summary: Apple opens a London office. It is big and new and shiny.")
    doc = summary_nlp(tiny_model(tiny_hf), max_words=8)("Apple opened an office in London.")
    assert doc._.llama_summary == "Apple opens a London office."


def test_tiny_model_respects_budget(tiny_hf):
    nlp = summary_nlp(tiny_model(tiny_hf), max_new_tokens=24, max_words=3)
    docs = list(nlp.pipe(["Apple opened an office in London.", ""]))
    assert len(docs[0]._.llama_summary.split()) <= 3
    assert docs[1]._.llama_summary == ""  # an empty doc is not sent to the model


def test_extension_docbin_roundtrip(tiny_hf, monkeypatch):
    answer_with(monkeypatch, "Apple expands.")
    nlp = summary_nlp(tiny_model(tiny_hf), summary_attr="short")
    assert nlp.get_pipe("llama").task.extensions == ["short"]
    doc = nlp("Apple opened an office in London.")
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    back = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    assert back._.short == doc._.short == "Apple expands."


def test_failure_modes(tiny_hf):
    with pytest.raises(ValueError, match="max_words must be at least 1"):
        summary_nlp(tiny_model(tiny_hf), max_words=0)
    with pytest.raises(ValueError, match="distinct identifiers"):
        summary_nlp(tiny_model(tiny_hf), summary_attr="not a name")
    # A doc with no entities: no "Key names" line.
    nlp = summary_nlp(tiny_model(tiny_hf), chat=False)
    req = nlp.get_pipe("llama").task.requests([nlp.make_doc("the cat sat")])[0]
    assert "Key names" not in req.prompt and "Text: the cat sat\nSummary:" in req.prompt


@pytest.mark.slow
def test_smollm2_summary(smollm2):
    nlp = summary_nlp(SMOL, max_new_tokens=48, max_words=20)
    texts = [
        "Toyota said on Monday it would invest $2 billion in a battery plant in North Carolina "
        "over the next five years, creating about 2,000 jobs.",
        "Arsenal beat Chelsea 2-1 at the Emirates on Saturday to move top of the league.",
    ]
    for doc in nlp.pipe(texts):
        words = doc._.llama_summary.split()
        assert 0 < len(words) <= 20
