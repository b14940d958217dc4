"""A server cannot hold a run forever (issue 21, item 5), and its answers are checked where
they enter the engine (item 3), against the scripted server on 127.0.0.1:

* ``timeout`` is a deadline for the whole attempt, not per socket read: a body sent one
  byte at a time used to keep a request waiting far beyond it;
* a ``Retry-After`` beyond the cap opens the breaker instead of sleeping 120 s per attempt;
* a connection dropped mid-body is retried (it used to surface as a raw IncompleteRead);
* every request has a total ``deadline`` over all its attempts and waits;
* an answer larger than ``max_new_tokens`` allows is not read into memory, one with more
  log-probabilities than tokens is refused, a lone surrogate is replaced (and counted),
  NaN/Infinity log-probabilities become None, so the output stays valid JSON."""

from __future__ import annotations

import json
from typing import Any, List

import pytest

from spacy_llama.errors import GenerationError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.server import ServerModel, openai_compatible_v1
from spacy_llama.types import GenerationRequest

from ..fixtures.fake_server import FakeServer, completion


def server_model(url: str, **kwargs: Any) -> ServerModel:
    kwargs.setdefault("context_length", 2048)
    return openai_compatible_v1(base_url=url, **kwargs)


def requests_for(prompts: List[str]) -> List[GenerationRequest]:
    return [GenerationRequest(prompt=p, label=f"doc {i}") for i, p in enumerate(prompts)]


def test_a_trickled_body_cannot_outlast_the_timeout() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, timeout=1.0, max_retries=0)
        fake.state.trickle = 0.1  # ~250 bytes: 25 s at one byte per 0.1 s
        [result] = model.complete(requests_for(["slow"]), GenerationConfig(max_new_tokens=1))
    # cut off at the attempt's deadline (before, the body arrived whole after 25 s)
    assert result.error is not None and "timed out" in result.error
    assert "took longer than the timeout" in result.error


def test_retry_after_beyond_the_cap_opens_the_breaker() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=3, retry_backoff=0.01)
        sent = len(fake.state.completions)
        fake.state.script = [(429, {"Retry-After": "3600"})]
        results = model.complete(requests_for(["a", "b", "c"]), GenerationConfig())
        attempts = len(fake.state.completions) - sent
    # the requests go out concurrently: whichever got the 429 fails, naming the wait
    errors = [r.error for r in results if r.error]
    assert errors and any("Retry-After" in e and "3600" in e for e in errors)
    assert attempts <= 3  # no retry of the one asked to wait an hour (it used to wait 120 s)


def test_connection_dropped_mid_body_is_retried() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=2, retry_backoff=0.01)
        fake.state.drops = 1
        sent = len(fake.state.completions)
        [result] = model.complete(requests_for(["hello there"]), GenerationConfig())
        attempts = len(fake.state.completions) - sent
    assert result.error is None and result.text == " there"
    assert attempts == 2


def test_dropped_every_time_is_a_failed_request_not_a_traceback() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=1, retry_backoff=0.01)
        fake.state.drops = 10
        engine = Engine(model, GenerationConfig(max_new_tokens=1))
        with pytest.raises(GenerationError, match="doc 0: .*(cut off|IncompleteRead)"):
            engine.run(requests_for(["dropped"]))


def test_total_deadline_over_all_attempts() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=50, retry_backoff=0.2, deadline=1.0)
        fake.state.script = [(503, {})] * 50
        [result] = model.complete(requests_for(["x"]), GenerationConfig(max_new_tokens=1))
        attempts = len(fake.state.completions)
    assert result.error is not None and "[E609]" in result.error
    assert attempts < 20  # given up at the deadline, not after 50 retries


def test_deadline_must_be_positive() -> None:
    with FakeServer() as fake:
        with pytest.raises(Exception, match="deadline"):
            server_model(fake.url, deadline=0)


# -- answers --------------------------------------------------------------------------------
def test_oversized_answer_is_refused_without_reading_it() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=0)
        fake.state.reply = completion("x" * 3_000_000, n_tokens=4)
        engine = Engine(model, GenerationConfig(max_new_tokens=4))
        with pytest.raises(GenerationError, match=r"\[E610\]"):
            engine.run(requests_for(["big"]))


def test_more_logprobs_than_tokens_is_refused() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=0)
        fake.state.reply = completion(" a", n_tokens=50)
        engine = Engine(model, GenerationConfig(max_new_tokens=1))
        with pytest.raises(GenerationError, match=r"\[E611\].*50"):
            engine.run(requests_for(["many"]))


def test_lone_surrogate_is_replaced_and_counted() -> None:
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=0)
        fake.state.reply = completion(" a\ud800b", n_tokens=1)
        engine = Engine(model, GenerationConfig(max_new_tokens=1))
        with pytest.warns(UserWarning, match="W601"):
            [result] = engine.run(requests_for(["half a pair"]))
    assert result.text == " a\ufffdb"
    result.text.encode("utf-8")  # any UTF-8 output can hold it
    assert engine.stats.repaired_answers == 1


def test_non_finite_logprobs_become_none_and_json_stays_valid() -> None:
    raw = b'{"choices": [{"text": " a b", "finish_reason": "length", '
    raw += b'"logprobs": {"token_logprobs": [NaN, -Infinity]}}]}'
    with FakeServer() as fake:
        model = server_model(fake.url, max_retries=0)
        fake.state.raw_reply = raw
        engine = Engine(model, GenerationConfig(max_new_tokens=2))
        with pytest.warns(UserWarning, match="W601"):
            [result] = engine.run(requests_for(["nan"]))
    assert result.logprobs == [None, None]
    json.dumps(result.to_dict(), allow_nan=False)


SERVER_CONFIG = """
[nlp]
lang = "en"
pipeline = ["llama"]

[components]

[components.llama]
factory = "llama"

[components.llama.model]
@llama_models = "spacy-llama.OpenAICompatible.v1"
base_url = "{url}"
context_length = 2048
max_retries = 0

[components.llama.task]
@llama_tasks = "spacy-llama.Completion.v1"
template = "{{{{ text }}}}"
chat = false

[components.llama.generation]
max_new_tokens = 2
"""


def test_annotate_with_docbin_survives_a_surrogate_answer_and_its_replay(tmp_path: Any) -> None:
    """A lone surrogate in an answer used to stop a --docbin run, and --resume replayed it
    from the cache and stopped again, so the run could never finish."""
    from pathlib import Path

    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from spacy_llama.cli import main

    from ..fixtures.corpus_files import read_jsonl

    tmp = Path(tmp_path)
    inp = tmp / "in.txt"
    inp.write_text("first doc\nsecond doc\n", encoding="utf-8")
    with FakeServer() as fake:
        config = tmp / "server.cfg"
        config.write_text(SERVER_CONFIG.format(url=fake.url), encoding="utf-8")
        fake.state.reply = completion(" x\ud800", n_tokens=2)
        args = ["annotate", str(config), str(inp), str(tmp / "out.jsonl"), "--quiet"]
        args += ["--docbin", str(tmp / "out.spacy")]
        assert main(args) == 0
        # the same answers again, now from the cache, into a fresh output
        again = ["annotate", str(config), str(inp), str(tmp / "again.jsonl"), "--quiet"]
        again += [
            "--docbin",
            str(tmp / "again.spacy"),
            "--cache",
            str(tmp / "out.jsonl.cache.sqlite"),
        ]
        assert main(again) == 0
    for name in ("out", "again"):
        summary = json.loads((tmp / f"{name}.jsonl.run.json").read_text())["summary"]
        assert summary["repaired_answers"] == 2  # counted, on the first run and the replay
        records = read_jsonl(tmp / f"{name}.jsonl")
        assert [r["llama_completion"] for r in records] == [" x\ufffd", " x\ufffd"]
        docs = [
            doc
            for part in sorted((tmp / f"{name}.spacy").glob("*.spacy"))
            for doc in DocBin().from_disk(part).get_docs(Vocab())
        ]
        assert len(docs) == 2
