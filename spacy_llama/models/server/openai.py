"""The OpenAI *completions* format: the request body for a rendered prompt and the sampling
settings, and the answer read back (text, the chosen tokens' raw log-probabilities, finish
reason, prompt tokens).

The prompt is rendered locally (chat templates are applied here, as for local models), and
the log-probabilities of the chosen tokens are asked for, so ``doc._.llama_logprobs`` works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Union

from ...errors import Errors
from ...types import FinishReason, GenerationResult
from .transport import ServerError


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


def max_answer_bytes(max_new_tokens: int) -> int:
    """The largest completion body read for ``max_new_tokens``: 4 KiB per token (its text,
    its log-probability and the JSON around them, generously) plus 64 KiB of envelope."""
    return (64 << 10) + 4096 * max(1, max_new_tokens)


# llama.cpp-family servers default to top_k=40, min_p=0.05 and repeat_penalty=1.1; the local
# engine applies none of these, so greedy output would differ. Other servers ignore them.
NEUTRAL_SAMPLING: Dict[str, Any] = {"min_p": 0.0, "repeat_penalty": 1.0}


def completion_body(
    prompt: Union[str, List[int]],
    config: SamplingSettings,
    *,
    served_model: str,
    logprobs: bool,
    constraint_fields: Optional[Dict[str, Any]] = None,
    extra_body: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The body of a POST /completions: ``constraint_fields`` are the server's own fields
    for a constraint (``constraints.py``), ``extra_body`` the user's, applied last."""
    body: Dict[str, Any] = {
        "model": served_model,
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
    if logprobs:
        body["logprobs"] = 0  # the chosen token's log-probability, no alternatives
    body.update(constraint_fields or {})
    body.update(extra_body or {})
    return body


def parse_completion(out: Any, *, logprobs: bool) -> GenerationResult:
    """The first choice of a completions answer; ServerError (no retry) if it is not one."""
    try:
        choice = out["choices"][0]
        text = choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ServerError(Errors.E127.format(response=str(out)[:300]), retry=False) from None
    if not isinstance(text, str):  # str(None) would be stored as the answer "None"
        raise ServerError(
            Errors.E128.format(kind=type(text).__name__, value=str(text)[:100]), retry=False
        )
    chosen: List[float] = []
    if logprobs:
        chosen = chosen_logprobs(choice.get("logprobs"))
    usage = out.get("usage") or {}
    return GenerationResult(
        text=text,
        logprobs=chosen,
        finish_reason=finish_reason(choice.get("finish_reason")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
    )


def chosen_logprobs(data: Any) -> List[float]:
    """The legacy completions format: ``logprobs.token_logprobs``, one per generated token."""
    values = (data or {}).get("token_logprobs") if isinstance(data, dict) else None
    if not isinstance(values, list) or any(v is None for v in values):
        raise ServerError(Errors.E129, retry=False)
    return [float(v) for v in values]


def finish_reason(value: Any) -> FinishReason:
    # OpenAI reports EOS and stop strings alike as "stop".
    return "length" if value == "length" else "stop"
