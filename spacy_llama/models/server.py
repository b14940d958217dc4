"""``spacy-llama.OpenAICompatible.v1``: generate on an OpenAI-compatible server (vLLM,
llama.cpp's ``llama-server``, ``llama-cpp-python[server]``, ...).

The engine sees a :class:`ServerModel` with a ``complete`` method and treats it as remote:
it sends the rendered prompts here and caches what comes back. This module

* checks the server when the model is loaded, so a wrong URL fails at start-up;
* sends a batch's requests concurrently (at most ``max_concurrency`` in flight);
* retries 429, 5xx, timeouts and connection errors (one cut off mid-answer too) with
  exponential backoff and jitter, honouring ``Retry-After``; a request that keeps failing
  becomes a result with ``error`` set, so one document fails instead of the whole run;
* bounds the time of everything: ``timeout`` is a deadline for a whole attempt (connecting,
  waiting and reading the body, however slowly it arrives), ``deadline`` for a whole request
  (all attempts and waits); a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER` opens the
  breaker instead of being waited for;
* bounds what it reads: a completion's body may hold at most
  :func:`max_answer_bytes` of ``max_new_tokens``, any other body :data:`MAX_BODY_BYTES`;
* stops sending completions to a server that no longer answers them (a circuit breaker,
  see ``breaker.py``): after ``breaker_threshold`` attempts in a row that timed out or found
  no server, completions fail at once for ``breaker_cooldown`` seconds, so a hung server
  fails a run's documents in about one timeout instead of every retry of every document;
* uses the *completions* endpoint with the prompt rendered locally (chat templates are
  applied here, as for local models), asking for the raw log-probabilities of the chosen
  tokens so ``doc._.llama_logprobs`` works.

Tokens are counted (for prompt budgets) with a local tokenizer when ``tokenizer_path`` is
set, else with the server's tokenize endpoint. ``chat = true`` needs ``tokenizer_path``:
the chat template lives in the tokenizer, and rendering it here keeps prompts, cache keys
and logprobs identical to the local backends. The API key is read from the environment
variable named by ``api_key_env`` at each request; it is never stored on the model.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Union

from ..errors import Errors, ModelLoadError, NoWeightsError
from ..registry import llama_models
from ..types import Constraint, FinishReason, GenerationRequest, GenerationResult
from .base import LoadedModel, control_strings_in, special_strings
from .breaker import BreakerOpen, CircuitBreaker
from .structured import SERVER_KINDS, constraint_fields, detect_kind


class SamplingSettings(Protocol):
    """The sampling settings a server request carries (``generation.config.GenerationConfig``
    has them; models sit below the engine, so they name only what they read)."""

    @property
    def max_new_tokens(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def top_k(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def stop(self) -> List[str]: ...
    @property
    def stop_token_ids(self) -> List[int]: ...


@dataclass(frozen=True)
class ProbeSettings:
    """One greedy token: what the start-up check asks of the server."""

    max_new_tokens: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)


RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds; a server asking for longer is treated as down
MAX_BODY_BYTES = 64 << 20  # any answer but a completion's (model lists, token ids...)
DEFAULT_DEADLINE = 600.0  # seconds for one request, all attempts and waits included


def max_answer_bytes(max_new_tokens: int) -> int:
    """The largest completion body read for ``max_new_tokens``: 4 KiB per token (its text,
    its log-probability and the JSON around them, generously) plus 64 KiB of envelope."""
    return (64 << 10) + 4096 * max(1, max_new_tokens)


# llama.cpp-family servers default to top_k=40, min_p=0.05 and repeat_penalty=1.1; the local
# engine applies none of these, so greedy output would differ. Other servers ignore them.
NEUTRAL_SAMPLING: Dict[str, Any] = {"min_p": 0.0, "repeat_penalty": 1.0}


class ServerError(RuntimeError):
    """One HTTP exchange failed; ``retry`` says whether trying again may help, ``answered``
    whether the server sent an answer at all (a timeout or a refused connection did not)."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool,
        retry_after: Optional[float] = None,
        answered: bool = True,
    ):
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after
        self.answered = answered


# -- HTTP -----------------------------------------------------------------------------------
@dataclass
class HttpClient:
    """Small JSON-over-HTTP client on the standard library (no extra dependency)."""

    base_url: str  # the API root, e.g. http://host:8000/v1
    timeout: float
    api_key_env: Optional[str] = None

    @property
    def root(self) -> str:
        """The server root (where llama.cpp and vLLM put /tokenize)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def get(self, path: str, *, timeout: Optional[float] = None) -> Any:
        return self._send("GET", self.base_url.rstrip("/") + path, None, timeout)

    def post(
        self,
        path: str,
        body: Dict[str, Any],
        *,
        at_root: bool = False,
        timeout: Optional[float] = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Any:
        base = self.root if at_root else self.base_url.rstrip("/")
        return self._send("POST", base + path, body, timeout, max_bytes=max_bytes)

    def _headers(self) -> Dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _send(
        self,
        method: str,
        url: str,
        body: Optional[dict],
        timeout: Optional[float],
        *,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit  # for the whole attempt, not per socket read
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                raw = read_body(resp, deadline=deadline, max_bytes=max_bytes, url=url)
        except urllib.error.HTTPError as e:
            raise http_error(url, e) from None
        except http.client.HTTPException as e:  # IncompleteRead, a bad status line
            cut = f"{type(e).__name__}: {e}"
            raise ServerError(
                Errors.E608.format(method=method, url=url, reason=cut),
                retry=True,
                answered=False,
            ) from None
        except (urllib.error.URLError, OSError) as e:  # refused, reset, DNS, timeout
            reason = getattr(e, "reason", e)
            kind = "timed out" if isinstance(reason, TimeoutError) else "failed"
            raise ServerError(
                Errors.E121.format(method=method, url=url, kind=kind, reason=reason),
                retry=True,
                answered=False,
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(
                Errors.E120.format(method=method, url=url, raw=repr(raw[:200])), retry=False
            ) from None


def read_body(resp: Any, *, deadline: float, max_bytes: int, url: str) -> bytes:
    """The body, read until ``deadline`` at the latest (a server that sends a byte now and
    then would defeat a per-read timeout) and never beyond ``max_bytes``."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _too_large(url, max_bytes)
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    chunks: List[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the answer took longer than the timeout ({total} bytes read)")
        if sock is not None:
            sock.settimeout(left)  # the next read may not outlast the attempt either
        try:
            chunk = resp.read1(1 << 16)
        except TimeoutError:
            raise TimeoutError(
                f"the answer took longer than the timeout ({total} bytes read)"
            ) from None
        if not chunk:
            if length is not None and length.isdigit() and total < int(length):
                # read1 ends quietly where read() would raise: the connection was cut
                raise http.client.IncompleteRead(b"".join(chunks), int(length) - total)
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(url, max_bytes)
        chunks.append(chunk)


def _too_large(url: str, max_bytes: int) -> ServerError:
    max_new = max(0, (max_bytes - (64 << 10)) // 4096)
    return ServerError(Errors.E610.format(url=url, limit=max_bytes, max_new=max_new), retry=False)


def http_error(url: str, error: urllib.error.HTTPError) -> ServerError:
    try:
        detail = error.read().decode("utf-8", "replace")[:500]
    except OSError:
        detail = ""
    return ServerError(
        Errors.E122.format(url=url, code=error.code, detail=detail or error.reason),
        retry=error.code in RETRY_STATUSES,
        retry_after=parse_retry_after(error.headers.get("Retry-After")),
    )


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- retries --------------------------------------------------------------------------------
@dataclass
class RetryPolicy:
    max_retries: int
    backoff: float  # the first delay (seconds); doubles with every retry
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        # "Equal jitter": never zero, and clients that failed together spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


# -- server-side tokenizers -----------------------------------------------------------------
@dataclass(frozen=True)
class TokenizeRoute:
    """One server family's tokenize/detokenize endpoints (at the server root)."""

    name: str
    tokenize: str
    detokenize: str
    text_key: str  # request field holding the text
    add_special_key: Optional[str]  # request field for add-special-tokens, if supported
    detok_key: str  # response field holding detokenized text


TOKENIZE_ROUTES = (
    TokenizeRoute(
        "llama-cpp-python", "/extras/tokenize", "/extras/detokenize", "input", None, "text"
    ),
    TokenizeRoute("llama.cpp", "/tokenize", "/detokenize", "content", "add_special", "content"),
    TokenizeRoute("vLLM", "/tokenize", "/detokenize", "prompt", "add_special_tokens", "prompt"),
)


class NoLocalWeights:
    """Stands in for the transformers model: scoring needs logits the server does not give."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __getattr__(self, name: str) -> Any:
        raise NoWeightsError(Errors.E124.format(source=self.source))


# -- the model ------------------------------------------------------------------------------
@dataclass
class ServerModel(LoadedModel):
    """A model behind an OpenAI-compatible server; see the module docstring."""

    client: Optional[HttpClient] = None
    served_model: str = ""
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(5, 0.5))
    max_concurrency: int = 8
    deadline: float = DEFAULT_DEADLINE  # seconds per request, every attempt and wait included
    logprobs: bool = True
    extra_body: Dict[str, Any] = field(default_factory=dict)
    route: Optional[TokenizeRoute] = None
    server_kind: Optional[str] = None  # "llama.cpp", "llama-cpp-python", "vllm"; None: unknown
    # One breaker per kind of call: only a successful completion says completions work
    # again (a server whose completions hang may still answer /tokenize at once).
    completions_breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(5, 60.0))
    tokenize_breaker: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(5, 60.0, kind="tokenize")
    )

    @property
    def http(self) -> HttpClient:
        assert self.client is not None, "ServerModel needs a client"
        return self.client

    @property
    def device(self) -> Any:
        return "remote"

    @property
    def dtype(self) -> Any:
        return "remote"

    @property
    def fingerprint(self) -> str:
        """The served model's name: where it is served does not change the answers."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"openai-compatible\0" + self.served_model.encode())
            h.update(self.extra_fingerprint.encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # -- tokens ---------------------------------------------------------------------------
    def encode(self, text: str, *, add_special_tokens: bool = True) -> List[int]:
        if self.tokenizer is not None:
            return super().encode(text, add_special_tokens=add_special_tokens)
        route = self._route()
        body: Dict[str, Any] = {route.text_key: text, "model": self.served_model}
        if route.add_special_key:
            body[route.add_special_key] = add_special_tokens
        send = lambda t: self.http.post(route.tokenize, body, at_root=True, timeout=t)  # noqa: E731
        return [int(t) for t in self._call(send, self.tokenize_breaker)["tokens"]]

    def decode(self, ids: Iterable[int]) -> str:
        if self.tokenizer is not None:
            return super().decode(ids)
        route = self._route()
        body = {"tokens": list(ids), "model": self.served_model}
        send = lambda t: self.http.post(route.detokenize, body, at_root=True, timeout=t)  # noqa: E731
        return str(self._call(send, self.tokenize_breaker)[route.detok_key])

    def _route(self) -> TokenizeRoute:
        if self.route is None:
            raise ModelLoadError(Errors.E125.format(url=self.http.base_url))
        return self.route

    def apply_chat_template(self, user: str, system: Optional[str]) -> str:
        if self.tokenizer is None:
            raise ModelLoadError(Errors.E126.format(url=self.http.base_url))
        return super().apply_chat_template(user, system)

    # -- generation -----------------------------------------------------------------------
    def check_constraint(self, constraint: Constraint) -> None:
        """ConstraintError now if this server cannot be asked to enforce ``constraint``."""
        constraint_fields(constraint, self.server_kind, self.http.base_url)

    def complete(
        self, requests: Sequence[GenerationRequest], config: SamplingSettings
    ) -> List[GenerationResult]:
        """Complete every request (concurrently); failures come back with ``error`` set."""
        if not requests:
            return []
        for constraint in {r.constraint for r in requests if r.constraint is not None}:
            self.check_constraint(constraint)  # before anything is sent
        workers = max(1, min(self.max_concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spacy-llama-http") as ex:
            return list(ex.map(lambda r: self._complete_one(r, config), requests))

    def _complete_one(
        self, request: GenerationRequest, config: SamplingSettings
    ) -> GenerationResult:
        body = self.completion_body(request.prompt, config, request.constraint)
        if self.tokenizer is not None and guarded_prompt(request.prompt, self.tokenizer):
            # A control string in user text: send token ids, which the server cannot
            # re-parse into control tokens (without a local tokenizer it gets the text).
            ids = self.encode(request.prompt, add_special_tokens=request.add_special_tokens)
            body["prompt"] = ids
        limit = max_answer_bytes(config.max_new_tokens)

        def send(timeout: float) -> GenerationResult:
            # Parsed inside the call: only a usable completion closes the breaker.
            out = self.http.post("/completions", body, timeout=timeout, max_bytes=limit)
            return self.parse_completion(out)

        try:
            return self._call(send, self.completions_breaker, what=request.label or "request")  # type: ignore[no-any-return]
        except ServerError as e:
            return GenerationResult(text="", finish_reason="error", error=str(e))

    def completion_body(
        self, prompt: str, config: SamplingSettings, constraint: Optional[Constraint] = None
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "model": self.served_model,
            "prompt": prompt,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "seed": config.seed,
            **NEUTRAL_SAMPLING,
        }
        if config.stop:
            body["stop"] = list(config.stop)
        if config.stop_token_ids:
            body["stop_token_ids"] = list(config.stop_token_ids)  # vLLM's extension
        if self.logprobs:
            body["logprobs"] = 0  # the chosen token's log-probability, no alternatives
        if constraint is not None:
            body.update(constraint_fields(constraint, self.server_kind, self.http.base_url))
        body.update(self.extra_body)
        return body

    def parse_completion(self, out: Any) -> GenerationResult:
        try:
            choice = out["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise ServerError(Errors.E127.format(response=str(out)[:300]), retry=False) from None
        if not isinstance(text, str):  # str(None) would be stored as the answer "None"
            raise ServerError(
                Errors.E128.format(kind=type(text).__name__, value=str(text)[:100]), retry=False
            )
        logprobs: List[float] = []
        if self.logprobs:
            logprobs = chosen_logprobs(choice.get("logprobs"))
        usage = out.get("usage") or {}
        return GenerationResult(
            text=text,
            logprobs=logprobs,
            finish_reason=finish_reason(choice.get("finish_reason")),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )

    def _call(
        self, send: Callable[[float], Any], breaker: CircuitBreaker, *, what: str = "request"
    ) -> Any:
        """Run ``send`` (given the attempt's timeout) with retries while ``breaker`` lets
        attempts through and the request's ``deadline`` allows; raise the last ServerError
        when they run out."""
        attempts = self.retry.max_retries + 1
        end = time.monotonic() + self.deadline
        for attempt in range(attempts):
            left = end - time.monotonic()
            try:
                if left <= 0:
                    error = Errors.E609.format(
                        what=what, deadline=self.deadline, error="no time left for an attempt"
                    )
                    raise ServerError(error, retry=False)
                timeout = min(self.http.timeout, left)
                return self._attempt(lambda: send(timeout), breaker)  # noqa: B023
            except ServerError as e:
                if e.retry_after is not None and e.retry_after > MAX_RETRY_AFTER:
                    message = Errors.E612.format(
                        url=self.http.base_url, seconds=e.retry_after, cap=MAX_RETRY_AFTER
                    )
                    breaker.hold(message)
                    raise ServerError(message, retry=False) from None
                if not e.retry:
                    raise
                if attempt + 1 >= attempts:
                    raise ServerError(
                        Errors.E123.format(error=e, attempts=attempts), retry=False
                    ) from None
                delay = self.retry.delay(attempt, e.retry_after)
                if time.monotonic() + delay >= end:
                    error = Errors.E609.format(what=what, deadline=self.deadline, error=e)
                    raise ServerError(error, retry=False) from None
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, send: Callable[[], Any], breaker: CircuitBreaker) -> Any:
        """One attempt, if the breaker admits it; its outcome is reported to the breaker."""
        admitted = breaker.admit()
        if isinstance(admitted, BreakerOpen):
            raise ServerError(self._open_message(admitted), retry=False)
        try:
            result = send()
        except ServerError as e:
            breaker.failed(str(e), answered=e.answered, probe=admitted)
            raise
        except BaseException as e:  # never leave a probe out forever
            breaker.failed(repr(e), answered=True, probe=admitted)
            raise
        breaker.succeeded()
        return result

    def _open_message(self, state: BreakerOpen) -> str:
        return Errors.E141.format(
            kind=state.kind, url=self.http.base_url, failures=state.failures, last=state.last,
            cooldown=state.cooldown,
        )  # fmt: skip


def guarded_prompt(prompt: str, tokenizer: Any) -> bool:
    """Whether ``prompt``'s user text holds a control string (see ``types.Prompt``)."""
    spans = getattr(prompt, "text_spans", ())
    return bool(spans) and bool(control_strings_in(str(prompt), spans, special_strings(tokenizer)))


def chosen_logprobs(data: Any) -> List[float]:
    """The legacy completions format: ``logprobs.token_logprobs``, one per generated token."""
    values = (data or {}).get("token_logprobs") if isinstance(data, dict) else None
    if not isinstance(values, list) or any(v is None for v in values):
        raise ServerError(Errors.E129, retry=False)
    return [float(v) for v in values]


def finish_reason(value: Any) -> FinishReason:
    # OpenAI reports EOS and stop strings alike as "stop".
    return "length" if value == "length" else "stop"


# -- loading --------------------------------------------------------------------------------
@llama_models("spacy-llama.OpenAICompatible.v1")
def openai_compatible_v1(
    *,
    base_url: str,
    model: str = "",
    api_key_env: Optional[str] = None,
    max_concurrency: int = 8,
    timeout: float = 60.0,
    max_retries: int = 5,
    retry_backoff: float = 0.5,
    tokenizer_path: Optional[Union[str, Path]] = None,
    context_length: Optional[int] = None,
    logprobs: bool = True,
    extra_body: Optional[Dict[str, Any]] = None,
    breaker_threshold: int = 5,
    breaker_cooldown: float = 60.0,
    server: str = "auto",
    deadline: float = DEFAULT_DEADLINE,
) -> ServerModel:
    """Generate on an OpenAI-compatible server at ``base_url`` (e.g. http://host:8000/v1).

    ``model`` is the served model's name ("" = the server's only model). ``api_key_env``
    names the environment variable holding the API key. ``timeout`` is per attempt;
    ``max_retries`` and ``retry_backoff`` (first delay, doubling) govern retries;
    ``deadline`` bounds a whole request (every attempt and wait) in seconds.
    ``context_length`` is needed when the server does not report it (llama-cpp-python).
    After ``breaker_threshold`` attempts in a row that got no answer (timed out, refused),
    calls fail at once for ``breaker_cooldown`` seconds; then one request tests the server.
    ``server`` ("auto", "llama.cpp", "llama-cpp-python", "vllm") says how to send a
    generation constraint (json_schema, regex, choices); "auto" tells from the server.
    """
    if server != "auto" and server not in SERVER_KINDS:
        raise ModelLoadError(Errors.E431.format(server=server, kinds=", ".join(SERVER_KINDS)))
    check_settings(
        max_concurrency=max_concurrency,
        timeout=timeout,
        max_retries=max_retries,
        breaker_threshold=breaker_threshold,
        breaker_cooldown=breaker_cooldown,
        deadline=deadline,
    )
    if api_key_env and not os.environ.get(api_key_env):
        raise ModelLoadError(Errors.E130.format(name=api_key_env))
    client = HttpClient(base_url=base_url, timeout=timeout, api_key_env=api_key_env)
    entry = pick_model(list_models(client), model, base_url)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    served = str(entry["id"])
    result = ServerModel(
        model=NoLocalWeights(base_url),
        tokenizer=tokenizer,
        name=served,
        source=f"{base_url} ({served})",
        context_length=context_length or detect_context(client, entry, tokenizer, base_url),
        stop_token_ids=[],
        pad_token_id=0,
        client=client,
        served_model=served,
        retry=RetryPolicy(max_retries, retry_backoff),
        max_concurrency=max_concurrency,
        deadline=deadline,
        logprobs=logprobs,
        extra_body=dict(extra_body or {}),
        completions_breaker=CircuitBreaker(breaker_threshold, breaker_cooldown),
        tokenize_breaker=CircuitBreaker(breaker_threshold, breaker_cooldown, kind="tokenize"),
    )
    if tokenizer is None:
        result.route = find_tokenize_route(client, served)
        result._route()  # without a tokenizer, token counts need the endpoint: fail now
    route = result.route.name if result.route is not None else None
    result.server_kind = server if server != "auto" else detect_kind(entry, route)
    check_completions(result)
    return result


def check_settings(
    *,
    max_concurrency: int,
    timeout: float,
    max_retries: int,
    breaker_threshold: int = 1,
    breaker_cooldown: float = 0.0,
    deadline: float = DEFAULT_DEADLINE,
) -> None:
    problems = [
        msg
        for bad, msg in (
            (max_concurrency < 1, "max_concurrency must be at least 1"),
            (timeout <= 0, "timeout must be positive (seconds)"),
            (max_retries < 0, "max_retries must be 0 or more"),
            (breaker_threshold < 1, "breaker_threshold must be at least 1"),
            (breaker_cooldown < 0, "breaker_cooldown must be 0 or more (seconds)"),
            (not deadline > 0, "deadline must be positive (seconds)"),
        )
        if bad
    ]
    if problems:
        raise ModelLoadError(Errors.E131.format(problems="; ".join(problems)))


def list_models(client: HttpClient) -> List[Dict[str, Any]]:
    """GET /models, once, with a short timeout: a wrong URL should fail at start-up."""
    url = client.base_url
    try:
        data = client.get("/models", timeout=min(client.timeout, 10.0))
    except ServerError as e:
        text = str(e)
        if "HTTP 401" in text or "HTTP 403" in text:
            message = Errors.E132.format(url=url, error=text, env=client.api_key_env)
        elif "HTTP 404" in text:
            message = Errors.E133.format(url=url, error=text)
        else:
            message = Errors.E134.format(url=url, error=text)
        raise ModelLoadError(message) from None
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models:
        raise ModelLoadError(Errors.E135.format(url=url, data=str(data)[:200]))
    return [m for m in models if isinstance(m, dict) and "id" in m]


def pick_model(models: List[Dict[str, Any]], wanted: str, url: str) -> Dict[str, Any]:
    names = [str(m["id"]) for m in models]
    if not wanted:
        if len(models) > 1:
            raise ModelLoadError(Errors.E136.format(url=url, names=names))
        return models[0]
    for m in models:
        if str(m["id"]) == wanted:
            return m
    raise ModelLoadError(Errors.E137.format(url=url, wanted=wanted, names=names))


def detect_context(client: HttpClient, entry: Dict[str, Any], tokenizer: Any, url: str) -> int:
    """vLLM lists ``max_model_len``; llama.cpp's server reports ``n_ctx`` in /props."""
    if entry.get("max_model_len"):
        return int(entry["max_model_len"])
    try:
        props = client._send("GET", client.root + "/props", None, min(client.timeout, 10.0))
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        if n_ctx:
            return int(n_ctx)
    except (ServerError, AttributeError):
        pass
    raise ModelLoadError(Errors.E138.format(url=url))


def find_tokenize_route(client: HttpClient, served: str) -> Optional[TokenizeRoute]:
    for route in TOKENIZE_ROUTES:
        body: Dict[str, Any] = {route.text_key: "Hello", "model": served}
        try:
            out = client.post(route.tokenize, body, at_root=True)
        except ServerError:
            continue
        if isinstance(out, dict) and isinstance(out.get("tokens"), list) and out["tokens"]:
            return route
    return None


def check_completions(model: ServerModel) -> None:
    """One-token completion: the endpoint works and, if asked for, returns logprobs."""
    body = model.completion_body("Hello", ProbeSettings())
    try:
        model.parse_completion(model.http.post("/completions", body))
    except ServerError as e:
        raise ModelLoadError(Errors.E139.format(url=model.http.base_url, error=e)) from None


def load_tokenizer(path: Union[str, Path]) -> Any:
    """A Hugging Face tokenizer folder, or a .gguf file (its tokenizer metadata)."""
    from transformers import AutoTokenizer

    file = Path(path).expanduser()
    try:
        if file.suffix == ".gguf" and file.is_file():
            return gguf_tokenizer(file)
        return AutoTokenizer.from_pretrained(str(file), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(Errors.E140.format(path=str(file), error=e)) from e


def gguf_tokenizer(file: Path) -> Any:
    """Reuse GGUF.v1's conversion if it exists (fast); else read the file's metadata."""
    from transformers import AutoTokenizer

    from .gguf import cache_problem, converted_folder, fix_special_tokens

    folder = converted_folder(file)
    if folder.exists() and cache_problem(folder) is None:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    fix_special_tokens(tokenizer, file)
    return tokenizer
