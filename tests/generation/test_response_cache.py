"""The response cache stores the model's raw answer: echo is applied on the way out, once,
whether the answer was decoded, read back from the cache, or came from a server."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.types import GenerationRequest, GenerationResult


class DictCache:
    """An in-memory ``ResponseCache`` that lets a test see what was stored."""

    def __init__(self) -> None:
        self.store: Dict[str, dict] = {}

    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]:
        return {k: self.store[k] for k in keys if k in self.store}

    def put_many(self, items: Dict[str, dict]) -> None:
        self.store.update(items)


def test_echo_with_cache_returns_the_prompt_once(tiny_hf: Any) -> None:
    model = hf_model_v1(tiny_hf, device="cpu")
    cache = DictCache()
    engine = Engine(model, GenerationConfig(max_new_tokens=4, echo=True), cache=cache)
    plain = Engine(model, GenerationConfig(max_new_tokens=4))
    req = GenerationRequest(prompt="London is a big city.")
    raw = plain.run([req])[0].text
    first = engine.run([req, req])  # a repeated document in one run
    again = engine.run([req])[0]  # a rerun / --resume: a cache hit
    assert engine.stats.cache_hits == 1
    assert [r.text for r in first] == [req.prompt + raw] * 2
    assert again.cached and again.text == req.prompt + raw
    assert [v["text"] for v in cache.store.values()] == [raw]  # stored raw, not echoed


def test_a_malformed_cache_value_is_a_miss(tiny_hf: Any) -> None:
    model = hf_model_v1(tiny_hf, device="cpu")
    cache = DictCache()
    engine = Engine(model, GenerationConfig(max_new_tokens=4), cache=cache)
    req = GenerationRequest(prompt="Paris is a big city.")
    want = engine.run([req])[0].text
    for bad in ({}, {"text": "x"}, {"text": 1, "token_ids": None, "logprobs": 3}):
        cache.store = {k: dict(bad) for k in cache.store}
        got = engine.run([req])[0]
        assert not got.cached and got.text == want  # decoded again, then stored whole
    assert engine.stats.cache_hits == 0


class EchoingServer:
    """A remote model (it has ``complete``) that answers every prompt with " ok"."""

    def __init__(self, model: Any) -> None:
        self.inner = model
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def complete(
        self, requests: List[GenerationRequest], config: GenerationConfig
    ) -> List[GenerationResult]:
        self.calls += len(requests)
        return [GenerationResult(text=" ok", finish_reason="stop") for _ in requests]


def test_server_echo_with_cache_returns_the_prompt_once(tiny_hf: Any) -> None:
    server = EchoingServer(hf_model_v1(tiny_hf, device="cpu"))
    cache = DictCache()
    engine = Engine(server, GenerationConfig(max_new_tokens=4, echo=True), cache=cache)  # type: ignore[arg-type]
    req = GenerationRequest(prompt="Hello")
    assert engine.run([req])[0].text == "Hello ok"
    assert engine.run([req])[0].text == "Hello ok"  # from the cache
    assert server.calls == 1
    assert [v["text"] for v in cache.store.values()] == [" ok"]
