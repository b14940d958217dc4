"""Budget-aware completion: a constrained answer the token budget would cut is closed onto
its shortest valid completion instead, at every budget, greedy and sampled, in both decode
loops; a constraint whose shortest output cannot fit fails when the engine is built."""

from __future__ import annotations

import json
from typing import Any, Dict

import jsonschema
import pytest
import spacy

from spacy_llama.batch.reader import Record
from spacy_llama.batch.records import doc_record, pipeline_extensions
from spacy_llama.errors import ConstraintError
from spacy_llama.generation.closing import closing_tokens, minimal_tokens
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.types import DOC_ERROR_KEY, Constraint, GenerationRequest

from ..fixtures.helpers import structured_nlp
from ..fixtures.tiny import CORPUS
from ..tasks.structured_helpers import docbin_roundtrip

# unbounded strings in an array: a random model never closes them by itself
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "section": {"enum": ["Books", "Electronics", "Toys"]},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["section", "keywords"],
    "additionalProperties": False,
}
PROMPTS = list(dict.fromkeys(CORPUS))


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


def minimum(model: Any) -> int:
    engine = Engine(model, GenerationConfig(max_new_tokens=256))
    closing = minimal_tokens(engine.grammar(Constraint("json_schema", json.dumps(SCHEMA))))
    assert closing is not None
    assert json.loads(model.decode(closing)) == {"section": "Toys", "keywords": []}
    return len(closing)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_budget_sweep_every_output_is_complete_and_valid(model, temperature):
    low = minimum(model)
    closed = 0
    for extra in (0, 1, 3, 11, 60):
        n = low + extra
        for fast in (True, False):
            cfg = GenerationConfig(
                json_schema=SCHEMA, max_new_tokens=n, temperature=temperature, seed=7
            )
            out = Engine(model, cfg, batch_size=3, fast_decoder=fast).run(
                [GenerationRequest(p) for p in PROMPTS]
            )
            for r in out:
                assert r.error is None, r
                jsonschema.validate(json.loads(r.text), SCHEMA)
                assert len(r.token_ids) <= n == cfg.max_new_tokens
                if r.closed:
                    assert r.finish_reason == "length"
                    assert r.logprobs[-1] is None  # the closing was never scored: null
                else:
                    assert r.finish_reason == "stop"
            closed += sum(r.closed for r in out)
    assert closed > 0  # the budget did cut answers, and they were closed


def test_closing_from_a_cut_string_closes_the_string_the_array_and_the_object(model):
    engine = Engine(model, GenerationConfig(max_new_tokens=64))
    row = engine.grammar(Constraint("json_schema", json.dumps(SCHEMA))).start()
    assert row.accept_all(
        model.encode('{"section": "Books", "keywords": ["a b', add_special_tokens=False)
    )
    path = closing_tokens(row)
    assert path is not None and model.decode(path) == '"]}'


def test_a_schema_whose_shortest_output_cannot_fit_fails_when_built(model):
    low = minimum(model)
    with pytest.raises(ConstraintError, match=rf"\[E650\].*max_new_tokens={low - 1}.*{low} tokens"):
        Engine(model, GenerationConfig(json_schema=SCHEMA, max_new_tokens=low - 1))
    Engine(model, GenerationConfig(json_schema=SCHEMA, max_new_tokens=low))  # fits exactly


def extract_nlp(tiny_hf: Any, max_new_tokens: int) -> spacy.Language:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}},
        "required": ["summary"],
    }
    task = {"@llama_tasks": "spacy-llama.Extract.v1", "schema": schema}
    return structured_nlp(tiny_hf, task, max_new_tokens=max_new_tokens)


def test_a_closed_answer_roundtrips_through_the_record_and_docbin(tiny_hf):
    nlp = extract_nlp(tiny_hf, 24)
    doc = nlp(PROMPTS[0])
    assert DOC_ERROR_KEY not in doc.user_data
    assert doc._.llama_finish == "closed" and isinstance(doc._.llama_data["summary"], str)
    record = doc_record(
        doc, Record(id="a", raw_id="a", text=doc.text), extensions=pipeline_extensions(nlp)
    )
    assert record["llama_finish"] == "closed" and record["llama_data"] == doc._.llama_data
    back = docbin_roundtrip(doc)
    assert back._.llama_finish == "closed" and back._.llama_data == doc._.llama_data


def test_a_per_doc_schema_that_cannot_fit_fails_when_the_pipeline_is_built(tiny_hf):
    with pytest.raises(ConstraintError, match=r"\[E650\].*component 'llama'.*max_new_tokens=4"):
        extract_nlp(tiny_hf, 4)
