"""The backend is chosen once, when the engine is built: a model with its weights here
decodes and scores locally and never opens a socket; a served model is sent to its server
and its weights (if any object could reach some) are never touched."""

from __future__ import annotations

import socket
from typing import Any, List, Sequence, Set

import pytest

from spacy_llama.errors import ModelLoadError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.generation.local import LocalBackend
from spacy_llama.generation.remote import ServerBackend
from spacy_llama.models.base import LoadedModel, has_local_weights
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.server import ServerModel, openai_compatible_v1
from spacy_llama.types import GenerationRequest, GenerationResult, ScoreRequest

from ..fixtures.fake_server import FakeServer


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Every socket connection attempted while the test runs (each one refused)."""
    opened: List[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        opened.append(address)
        raise ConnectionRefusedError(f"no sockets in this test ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return opened


class ServedWithWeights:
    """A served model (it has ``complete``) through which a LoadedModel's weights are in
    reach: it records every attribute the engine reads, so a test sees whether the engine
    ever went for the weights (``model``) or the pad id only a local decode needs."""

    def __init__(self, local: LoadedModel) -> None:
        self.local = local
        self.read: Set[str] = set()
        self.sent: List[str] = []

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self.local, name)

    def complete(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> List[GenerationResult]:
        self.sent.extend(str(r.prompt) for r in requests)
        return [GenerationResult(text=" served", finish_reason="stop") for _ in requests]


def test_a_local_model_decodes_and_scores_here_without_a_socket(tiny_hf, sockets) -> None:
    model = hf_model_v1(tiny_hf, device="cpu")
    engine = Engine(model, GenerationConfig(max_new_tokens=3))
    assert has_local_weights(model) and isinstance(engine.backend, LocalBackend)
    assert engine.answers_scoring
    [generated] = engine.run([GenerationRequest(prompt="Paris is a big city.")])
    [scored] = engine.run_all([ScoreRequest(prompt="Paris is", candidates=[" big", " small"])])
    assert len(generated.token_ids) == 3 and generated.error is None
    assert len(scored.sums) == 2 and all(lp < 0 for lp in scored.sums)
    assert engine.stats.generated_tokens == 3
    assert sockets == []


def test_a_served_model_is_sent_to_its_server_and_its_weights_are_never_read(tiny_hf) -> None:
    served = ServedWithWeights(hf_model_v1(tiny_hf, device="cpu"))
    engine = Engine(served, GenerationConfig(max_new_tokens=3))  # type: ignore[arg-type]
    assert not has_local_weights(served) and isinstance(engine.backend, ServerBackend)
    results = engine.run([GenerationRequest(prompt="Paris is"), GenerationRequest(prompt="Rome")])
    assert [r.text for r in results] == [" served", " served"]
    assert served.sent == ["Paris is", "Rome"]
    # the engine read what a served model has (stops, context, fingerprint), never weights
    assert not served.read & {"model", "pad_token_id", "dtype", "device"}, served.read
    assert not engine.answers_scoring
    with pytest.raises(NotImplementedError, match=r"\[E124\]"):
        engine.run_all([ScoreRequest(prompt="Paris is", candidates=[" big"])])
    assert "model" not in served.read


def test_the_server_model_has_no_weights_to_pretend_with() -> None:
    with FakeServer() as fake:
        model = openai_compatible_v1(base_url=fake.url, context_length=256)
        engine = Engine(model, GenerationConfig(max_new_tokens=2))
        [result] = engine.run([GenerationRequest(prompt="hello there")])
    assert isinstance(model, ServerModel) and not isinstance(model, LoadedModel)
    assert not has_local_weights(model) and not hasattr(model, "model")
    assert isinstance(engine.backend, ServerBackend)
    assert result.text == " there" and fake.state.bodies  # the fake server echoes a word
    with pytest.raises(AttributeError):
        engine.fast  # noqa: B018 - a server backend has no fused decoder to build


def test_a_model_neither_local_nor_served_is_refused_when_the_engine_is_built() -> None:
    class Stranger:
        stop_token_ids: List[int] = []
        source = "somewhere"

    with pytest.raises(ModelLoadError, match=r"\[E965\].*Stranger"):
        Engine(Stranger(), GenerationConfig())  # type: ignore[arg-type]


def test_quantize_on_a_served_model_names_the_setting(tiny_hf) -> None:
    served = ServedWithWeights(hf_model_v1(tiny_hf, device="cpu"))
    with pytest.raises(ValueError, match=r"\[E402\].*quantize = \"int8\""):
        Engine(served, GenerationConfig(), quantize="int8")  # type: ignore[arg-type]
    assert "model" not in served.read
