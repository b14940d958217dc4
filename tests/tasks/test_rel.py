"""spacy-llama.REL.v1: entity indexes and relation labels as enums, head != tail in the
schema (and the engine's grammar), spacy-llm's REL format, no model call below two entities,
failed docs, scoring and DocBin."""

from __future__ import annotations

import json
from typing import Any

import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

import spacy_llama.tasks.rel  # noqa: F401  (registers spacy-llama.REL.v1)
from spacy_llama.errors import FewShotError, SchemaError
from spacy_llama.generation import grammar as G
from spacy_llama.tasks.rel import rel_task_v1, relations_schema
from spacy_llama.tasks.structured import json_constraint
from spacy_llama.types import DOC_ERROR_KEY, GenerationResult

from ..fixtures.tiny import make_tokenizer
from .structured_helpers import answer_with, docbin_roundtrip, structured_nlp

TEMPLATE = "{% for e in entities %}[{{ e.index }}] {{ e.text }} ({{ e.label_ }})\n{% endfor %}"
TASK = {
    "@llama_tasks": "spacy-llama.REL.v1",
    "labels": ["works_for", "located_in"],
    "verbalizers": {"works_for": "works for"},
    "template": TEMPLATE,
}


def annotated_doc(nlp: spacy.Language) -> Doc:
    words = ["Tim", "Cook", "of", "Apple", "flew", "to", "London", "."]
    return Doc(
        nlp.vocab,
        words=words,
        spaces=[True, True, True, True, True, True, False, False],
        ents=["B-PERSON", "I-PERSON", "O", "B-ORG", "O", "O", "B-GPE", "O"],
    )


def relations(*triples: Any) -> GenerationResult:
    rels = [{"head": h, "relation": r, "tail": t} for h, r, t in triples]
    return GenerationResult(text=json.dumps({"relations": rels}), finish_reason="stop")


def test_prompt_lists_entities_and_schema_enumerates_indexes(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    seen = answer_with(monkeypatch, relations())
    nlp.get_pipe("llama")(annotated_doc(nlp))
    assert seen[0].prompt == "[0] Tim Cook (PERSON)\n[1] Apple (ORG)\n[2] London (GPE)\n"
    items = json.loads(seen[0].constraint.spec)["properties"]["relations"]["items"]["anyOf"]
    assert [x["properties"]["head"] for x in items] == [{"const": 0}, {"const": 1}, {"const": 2}]
    tails = [x["properties"]["tail"]["enum"] for x in items]
    assert tails == [[1, 2], [0, 2], [0, 1]]  # head != tail, in the schema itself
    assert items[0]["properties"]["relation"]["enum"] == ["works for", "located_in"]


def test_the_engine_grammar_forbids_head_equal_to_tail():
    tok = make_tokenizer()
    compiler = G.compiler_for(tok, len(tok), [2])
    labels = rel_task_v1(labels=["works_for"]).labels
    constraint = json_constraint(relations_schema(labels, 2))
    answer = '{{"relations": [{{"head": 0, "relation": "works_for", "tail": {}}}]}}'
    for tail, allowed in ((1, True), (0, False)):
        ids = tok(answer.format(tail), add_special_tokens=False)["input_ids"]
        assert (compiler.compile(constraint).start().valid_prefix(ids) == len(ids)) is allowed


def test_relations_in_spacy_llm_format_repeats_dropped(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    answer_with(
        monkeypatch,
        relations((0, "works for", 1), (0, "works for", 1), (1, "located_in", 2)),
    )
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert doc._.llama_relations == [
        {"head": 0, "tail": 1, "relation": "works_for"},  # the label name, not the verbalizer
        {"head": 1, "tail": 2, "relation": "located_in"},
    ]
    back = docbin_roundtrip(doc)
    assert [dict(r) for r in back._.llama_relations] == doc._.llama_relations
    assert DOC_ERROR_KEY not in doc.user_data


def test_fewer_than_two_entities_no_model_call_empty_list(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    seen = answer_with(monkeypatch)  # any real answer would raise StopIteration
    one = Doc(nlp.vocab, words=["Apple", "rose"], ents=["B-ORG", "O"])
    docs = [nlp.get_pipe("llama")(one), nlp("no entities here")]
    assert [r.prompt for r in seen] == ["", ""]
    assert [d._.llama_relations for d in docs] == [[], []]


def test_cut_off_answer_fails_the_doc(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    answer_with(
        monkeypatch,
        GenerationResult(text='{"relations": [{"head": 0', finish_reason="length", error="cut"),
    )
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert doc.user_data[DOC_ERROR_KEY].startswith("REL.v1: [E369]")
    assert doc._.llama_relations is None


@pytest.mark.parametrize("head,tail", [(0, 3), (1, 1)])  # not an entity; head == tail
def test_an_answer_outside_the_schema_fails_the_doc(tiny_hf, monkeypatch, head, tail):
    nlp = structured_nlp(tiny_hf, TASK)
    answer_with(monkeypatch, relations((head, "works for", tail)))  # an unconstrained server
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    assert doc.user_data[DOC_ERROR_KEY].startswith("REL.v1: [E371]")
    assert doc._.llama_relations is None


def test_score_compares_entities_by_offsets(tiny_hf, monkeypatch):
    nlp = structured_nlp(tiny_hf, TASK)
    answer_with(monkeypatch, relations((0, "works for", 1), (1, "located_in", 2)))
    doc = nlp.get_pipe("llama")(annotated_doc(nlp))
    gold = Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
    # Gold has no "Tim Cook": Apple and London are its entities 0 and 1, not 1 and 2.
    gold.ents = [gold.char_span(12, 17, "ORG"), gold.char_span(26, 32, "GPE")]
    gold._.llama_relations = [{"head": 0, "tail": 1, "relation": "located_in"}]
    scores = nlp.get_pipe("llama").task.score([Example(doc, gold)])
    assert scores == {"rel_micro_p": 0.5, "rel_micro_r": 1.0, "rel_micro_f": pytest.approx(2 / 3)}


def test_empty_label_list_is_a_coded_error():
    with pytest.raises(FewShotError, match=r"\[E368\] REL.v1: `labels`"):
        rel_task_v1(labels=[])


def test_max_relations_bounds_the_answer():
    task = rel_task_v1(labels=["works_for"], max_relations=2)
    assert relations_schema(task.labels, 3, 2)["properties"]["relations"]["maxItems"] == 2
    assert task.max_relations == 2
    assert "maxItems" not in relations_schema(task.labels, 3)["properties"]["relations"]
    with pytest.raises(SchemaError, match=r"\[E374\] REL.v1: max_relations = 0"):
        rel_task_v1(labels=["works_for"], max_relations=0)
