"""``spacy-llama.OpenAICompatible.v1``: the loader. It checks the settings, discovers the
server (``discovery.py``: a wrong URL fails at start-up), loads the local tokenizer if one is
given (``tokenizer.py``), and asks for one completion before returning the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ...errors import Errors, ModelLoadError
from ...registry import llama_models
from .breaker import CircuitBreaker
from .constraints import SERVER_KINDS
from .discovery import detect_context, detect_kind, find_tokenize_route, list_models, pick_model
from .model import ServerModel
from .openai import ProbeSettings, parse_completion
from .tokenizer import load_tokenizer
from .transport import DEFAULT_DEADLINE, HttpClient, RetryPolicy, ServerError


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
        tokenizer=tokenizer,
        name=served,
        source=f"{base_url} ({served})",
        context_length=context_length or detect_context(client, entry, tokenizer, base_url),
        stop_token_ids=[],
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
        result.tokenize_route()  # without a tokenizer, token counts need the endpoint: fail now
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


def check_completions(model: ServerModel) -> None:
    """One-token completion: the endpoint works and, if asked for, returns logprobs."""
    body = model.completion_body("Hello", ProbeSettings())
    try:
        parse_completion(model.http.post("/completions", body), logprobs=model.logprobs)
    except ServerError as e:
        raise ModelLoadError(Errors.E139.format(url=model.http.base_url, error=e)) from None
