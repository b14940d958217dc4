"""max_string_tokens: a free string value of a JSON-schema answer holds at most that many
tokens (the engine closes it), the output stays complete and valid; the schema's own caps
(maxLength, maxItems) are honoured; a cap where nothing can honour it is a coded error."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import jsonschema
import pytest
import spacy

from spacy_llama.errors import ConstraintError, SchemaError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.models.server.constraints import constraint_fields
from spacy_llama.types import DOC_ERROR_KEY, Constraint, GenerationRequest

from ..fixtures.helpers import structured_nlp
from ..fixtures.tiny import CORPUS

# unbounded strings, one plain and three in an array: a random model writes them long
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "section": {"enum": ["Books", "Electronics", "Toys"]},
        "title": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["section", "title", "keywords"],
    "additionalProperties": False,
}
PROMPTS = list(dict.fromkeys(CORPUS))


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


NOT_FREE = {"section", "title", "keywords", "Books", "Electronics", "Toys"}


def string_token_counts(token_bytes: List[bytes], ids: List[int]) -> List[int]:
    """Per free string value of the output (keys and enum values left out), how many of
    its tokens hold at least one of its bytes (a JSON lexer over the tokens' bytes)."""
    strings: List[List[Any]] = []  # [content bytes, tokens]
    inside = escape = False
    for t in ids:
        counted = False
        for b in token_bytes[t]:
            if not inside:
                if b == 0x22:
                    inside, escape, counted = True, False, False
                    strings.append([b"", 0])
                continue
            if escape:
                escape = False
            elif b == 0x5C:
                escape = True
            elif b == 0x22:
                inside = False
                continue
            strings[-1][0] += bytes([b])
            if not counted:
                strings[-1][1] += 1
                counted = True
    return [n for data, n in strings if data.decode("utf-8", "replace") not in NOT_FREE]


def run(model: Any, cap: Any, temperature: float, fast: bool, max_new: int = 96) -> List[Any]:
    cfg = GenerationConfig(
        json_schema=SCHEMA,
        max_string_tokens=cap,
        max_new_tokens=max_new,
        temperature=temperature,
        seed=3,
    )
    engine = Engine(model, cfg, batch_size=3, fast_decoder=fast)
    out = engine.run([GenerationRequest(p) for p in PROMPTS])
    token_bytes = engine.grammar(cfg.constraint).vocab.token_bytes  # type: ignore[arg-type]
    return [(r, string_token_counts(token_bytes, r.token_ids)) for r in out]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_with_the_cap_no_string_holds_more_tokens_and_every_output_is_valid(model, temperature):
    longest_free = 0
    for fast in (True, False):
        for _, counts in run(model, None, temperature, fast):
            longest_free = max([longest_free, *counts])
    cap = 3
    assert longest_free > cap  # without the cap, strings run longer: the cap is what cuts them
    for fast in (True, False):
        capped = run(model, cap, temperature, fast)
        for r, counts in capped:
            assert r.error is None, r
            jsonschema.validate(json.loads(r.text), SCHEMA)
            assert counts and max(counts) <= cap, (r.text, counts)
        assert any(max(c) == cap for _, c in capped)  # strings do reach it


def test_the_cap_is_per_string_and_one_token_strings_are_possible(model):
    for r, counts in run(model, 1, 0.0, True):
        jsonschema.validate(json.loads(r.text), SCHEMA)
        assert max(counts) <= 1, (r.text, counts)


def test_schema_caps_max_length_and_max_items_are_honoured(model):
    schema = {
        "type": "object",
        "properties": {
            "keywords": {
                "type": "array",
                "items": {"type": "string", "maxLength": 5},
                "maxItems": 2,
            }
        },
        "required": ["keywords"],
        "additionalProperties": False,
    }
    for temperature in (0.0, 1.0):
        cfg = GenerationConfig(json_schema=schema, max_new_tokens=96, temperature=temperature)
        for r in Engine(model, cfg, batch_size=3).run([GenerationRequest(p) for p in PROMPTS]):
            value = json.loads(r.text)
            jsonschema.validate(value, schema)
            assert len(value["keywords"]) <= 2 and all(len(k) <= 5 for k in value["keywords"])


def test_a_cap_without_a_json_schema_or_below_one_is_a_config_error():
    with pytest.raises(ValueError, match=r"E652.*regex"):
        GenerationConfig(regex="[a-z]+", max_string_tokens=4)
    with pytest.raises(ValueError, match=r"E652.*no constraint"):
        GenerationConfig(max_string_tokens=4)
    with pytest.raises(ValueError, match="max_string_tokens"):
        GenerationConfig(json_schema=SCHEMA, max_string_tokens=0)
    # a cap changes the answers, so it changes the cache key
    capped = GenerationConfig(json_schema=SCHEMA, max_string_tokens=4)
    assert GenerationConfig(json_schema=SCHEMA).fingerprint() != capped.fingerprint()
    assert capped.constraint is not None and capped.constraint.max_string_tokens == 4


def test_a_server_cannot_be_asked_for_the_cap():
    capped = Constraint("json_schema", json.dumps(SCHEMA), max_string_tokens=4)
    with pytest.raises(ConstraintError, match=r"E653.*max_string_tokens=4"):
        constraint_fields(capped, "vllm", "http://localhost:8000")
    assert constraint_fields(Constraint("json_schema", json.dumps(SCHEMA)), "vllm", "u")


def extract_nlp(tiny_hf: Any, cap: Any) -> spacy.Language:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}},
        "required": ["summary"],
    }
    task = {"@llama_tasks": "spacy-llama.Extract.v2", "schema": schema, "max_string_tokens": cap}
    return structured_nlp(tiny_hf, task, max_new_tokens=48)


def test_extract_caps_its_free_strings(tiny_hf):
    free = extract_nlp(tiny_hf, None)
    capped = extract_nlp(tiny_hf, 2)
    task = capped.get_pipe("llama").task
    assert task.requests([capped.make_doc(PROMPTS[0])])[0].constraint.max_string_tokens == 2
    long_free = 0
    for text in PROMPTS:
        doc = capped(text)
        assert DOC_ERROR_KEY not in doc.user_data
        summary = doc._.llama_data["summary"]
        assert len(capped.get_pipe("llama").model.encode(summary, add_special_tokens=False)) <= 2
        long_free += len(free(text)._.llama_data["summary"]) > len(summary)
    assert long_free  # the uncapped answers are longer


@pytest.mark.parametrize("cap", [0, -1])
def test_extract_rejects_a_cap_below_one(tiny_hf, cap):
    with pytest.raises(SchemaError, match=rf"E651.*max_string_tokens={cap}"):
        extract_nlp(tiny_hf, cap)
