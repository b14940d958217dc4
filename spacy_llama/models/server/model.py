"""The model behind an OpenAI-compatible server: what the engine's server backend
(``generation/remote.py``) calls. It has no weights: it completes rendered prompts
(concurrently, at most ``max_concurrency`` in flight), counts tokens with its local
tokenizer or the server's tokenize endpoint, and enforces a constraint through the
server's own fields (``constraints.py``).

A request that keeps failing comes back as a result with ``error`` set, so one document
fails instead of the whole run. Completions stop being sent to a server that no longer
answers them (a circuit breaker per kind of call, ``breaker.py``): after
``breaker_threshold`` attempts in a row that timed out or found no server, they fail at once
for ``breaker_cooldown`` seconds, so a hung server fails a run's documents in about one
timeout instead of every retry of every document.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ...errors import Errors, ModelLoadError
from ...types import Constraint, GenerationRequest, GenerationResult
from ..base import LanguageModel, control_strings_in, special_strings
from .breaker import CircuitBreaker
from .constraints import constraint_fields
from .discovery import TokenizeRoute
from .openai import SamplingSettings, completion_body, max_answer_bytes, parse_completion
from .transport import DEFAULT_DEADLINE, HttpClient, RetryPolicy, ServerError, call_with_retries


@dataclass
class ServerModel(LanguageModel):
    """A model behind an OpenAI-compatible server; see the module docstring."""

    tokenizer: Any  # a local tokenizer (``tokenizer_path``), or None: the server counts
    name: str
    source: str  # the URL and the served model, for messages
    context_length: int
    stop_token_ids: List[int]
    client: Optional[HttpClient] = None
    served_model: str = ""
    extra_fingerprint: str = ""
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
    _fingerprint: Optional[str] = field(default=None, repr=False)

    @property
    def http(self) -> HttpClient:
        assert self.client is not None, "ServerModel needs a client"
        return self.client

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
        route = self.tokenize_route()
        body: Dict[str, Any] = {route.text_key: text, "model": self.served_model}
        if route.add_special_key:
            body[route.add_special_key] = add_special_tokens
        send = lambda t: self.http.post(route.tokenize, body, at_root=True, timeout=t)  # noqa: E731
        return [int(t) for t in self._call(send, self.tokenize_breaker)["tokens"]]

    def decode(self, ids: Iterable[int]) -> str:
        if self.tokenizer is not None:
            return super().decode(ids)
        route = self.tokenize_route()
        body = {"tokens": list(ids), "model": self.served_model}
        send = lambda t: self.http.post(route.detokenize, body, at_root=True, timeout=t)  # noqa: E731
        return str(self._call(send, self.tokenize_breaker)[route.detok_key])

    def tokenize_route(self) -> TokenizeRoute:
        """The server's tokenize endpoints (ModelLoadError if it has none)."""
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
            return parse_completion(out, logprobs=self.logprobs)

        try:
            return self._call(send, self.completions_breaker, what=request.label or "request")  # type: ignore[no-any-return]
        except ServerError as e:
            return GenerationResult(text="", finish_reason="error", error=str(e))

    def completion_body(
        self, prompt: str, config: SamplingSettings, constraint: Optional[Constraint] = None
    ) -> Dict[str, Any]:
        """This server's POST /completions body for ``prompt`` (``openai.py``)."""
        fields = None
        if constraint is not None:
            fields = constraint_fields(constraint, self.server_kind, self.http.base_url)
        return completion_body(
            prompt,
            config,
            served_model=self.served_model,
            logprobs=self.logprobs,
            constraint_fields=fields,
            extra_body=self.extra_body,
        )

    def _call(
        self, send: Callable[[float], Any], breaker: CircuitBreaker, *, what: str = "request"
    ) -> Any:
        return call_with_retries(
            send,
            breaker,
            retry=self.retry,
            deadline=self.deadline,
            timeout=self.http.timeout,
            url=self.http.base_url,
            what=what,
        )


def guarded_prompt(prompt: str, tokenizer: Any) -> bool:
    """Whether ``prompt``'s user text holds a control string (see ``types.Prompt``)."""
    spans = getattr(prompt, "text_spans", ())
    return bool(spans) and bool(control_strings_in(str(prompt), spans, special_strings(tokenizer)))
