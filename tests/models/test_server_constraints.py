"""Generation constraints on a server: each server family gets the fields it enforces,
a constraint it cannot enforce fails when the pipeline is built, and the real
llama-cpp-python server returns outputs that match."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spacy_llama.errors import ConstraintError, ModelLoadError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.server import openai_compatible_v1
from spacy_llama.models.server.constraints import choices_gbnf
from spacy_llama.models.server.discovery import detect_kind
from spacy_llama.types import Constraint, GenerationRequest

from ..fixtures.fake_server import FakeServer, completion
from ..fixtures.llama_server import (
    LlamaServer,
    gguf_path,
    llama_server_fixture,  # noqa: F401  (the llama_server fixture)
)

SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "London"]}},
    "required": ["city"],
    "additionalProperties": False,
}


def sent_fields(srv: FakeServer, server: str, **generation: Any) -> dict:
    model = openai_compatible_v1(base_url=srv.url, context_length=512, server=server)
    Engine(model, GenerationConfig(**generation)).run([GenerationRequest("The capital is")])
    body = srv.state.bodies[-1]
    return {k: body[k] for k in ("guided_json", "guided_regex", "guided_choice", "json_schema",
                                 "grammar") if k in body}  # fmt: skip


def test_vllm_gets_guided_fields():
    with FakeServer() as srv:
        assert sent_fields(srv, "vllm", json_schema=SCHEMA) == {"guided_json": SCHEMA}
        assert sent_fields(srv, "vllm", regex="[0-9]+") == {"guided_regex": "[0-9]+"}
        assert sent_fields(srv, "vllm", choices=["a", "b"]) == {"guided_choice": ["a", "b"]}
        assert sent_fields(srv, "vllm") == {}  # unconstrained: nothing added


def test_llama_cpp_gets_json_schema_and_a_gbnf_for_choices():
    with FakeServer() as srv:
        assert sent_fields(srv, "llama.cpp", json_schema=SCHEMA) == {"json_schema": SCHEMA}
        choices = ["Paris", 'say "hi"\n', "Zürich"]
        assert sent_fields(srv, "llama.cpp", choices=choices) == {
            "grammar": 'root ::= "Paris" | "say \\"hi\\"\\n" | "Z\\u00fcrich"'
        }
        # the request's own constraint takes the config's place
        model = openai_compatible_v1(base_url=srv.url, context_length=512, server="llama.cpp")
        req = GenerationRequest("x", constraint=Constraint("choices", '["yes", "no"]'))
        Engine(model, GenerationConfig(json_schema=SCHEMA)).run([req])
        assert srv.state.bodies[-1]["grammar"] == 'root ::= "yes" | "no"'
        assert "json_schema" not in srv.state.bodies[-1]


def test_unenforceable_constraints_fail_when_the_pipeline_is_built(tiny_hf):
    with FakeServer() as srv:
        model = openai_compatible_v1(base_url=srv.url, context_length=512, server="llama.cpp")
        with pytest.raises(ConstraintError, match=r"E429.*regex.*llama\.cpp"):
            Engine(model, GenerationConfig(regex="[0-9]+"))
        # no owned_by and no tokenize route probed (a tokenizer is given): unknown server
        unknown = openai_compatible_v1(
            base_url=srv.url, context_length=512, tokenizer_path=str(tiny_hf)
        )
        assert unknown.server_kind is None
        with pytest.raises(ConstraintError, match=r"E430.*server = one of"):
            Engine(unknown, GenerationConfig(choices=["a"]))
        Engine(unknown, GenerationConfig())  # unconstrained is fine
        with pytest.raises(ModelLoadError, match="E431"):
            openai_compatible_v1(base_url=srv.url, context_length=512, server="tgi")
        n = len(srv.state.bodies)
    assert n == 2  # the start-up probes only: nothing was sent unconstrained


def test_server_kind_is_detected():
    assert detect_kind({"owned_by": "vllm"}, None) == "vllm"
    assert detect_kind({"owned_by": "llamacpp"}, None) == "llama.cpp"
    assert detect_kind({"owned_by": "me"}, None) == "llama-cpp-python"
    assert detect_kind({}, "llama-cpp-python") == "llama-cpp-python"
    assert detect_kind({}, None) is None
    assert choices_gbnf(["a"]) == 'root ::= "a"'


def test_server_length_under_a_constraint_is_an_error():
    with FakeServer(reply=completion('{"city": "Par', n_tokens=4)) as srv:
        model = openai_compatible_v1(base_url=srv.url, context_length=512, server="vllm")
        [res] = Engine(model, GenerationConfig(max_new_tokens=4, json_schema=SCHEMA)).run(
            [GenerationRequest("The capital is")]
        )
        assert res.finish_reason == "length" and res.error is not None
        assert res.error.startswith("[E426] the output reached max_new_tokens=4")
        [plain] = Engine(model, GenerationConfig(max_new_tokens=4)).run([GenerationRequest("x")])
        assert plain.error is None


def test_real_llama_cpp_python_server_enforces_choices_and_schema(llama_server: LlamaServer):
    remote = openai_compatible_v1(
        base_url=llama_server.url, context_length=2048, tokenizer_path=str(gguf_path())
    )
    assert remote.server_kind == "llama-cpp-python"
    prompt = "Q: What is the capital of France?\nA:"
    choices = ["Madrid", "Rome", "Berlin"]  # not the model's answer: the grammar must decide
    [picked] = Engine(remote, GenerationConfig(max_new_tokens=8, choices=choices)).run(
        [GenerationRequest(prompt)]
    )
    assert picked.text in choices, picked
    [answer] = Engine(remote, GenerationConfig(max_new_tokens=24, json_schema=SCHEMA)).run(
        [GenerationRequest(prompt)]
    )
    assert json.loads(answer.text)["city"] in ("Paris", "London"), answer
