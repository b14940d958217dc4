"""Plain data passed between tasks and the engine (no torch here: tasks import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

FinishReason = Literal["stop", "length", "eos", "empty", "error"]


@dataclass
class GenerationRequest:
    """One prompt to complete. ``prompt`` is fully formatted (chat template applied)."""

    prompt: str
    add_special_tokens: bool = True
    label: str = ""  # names the document in warnings and errors


@dataclass
class GenerationResult:
    text: str
    token_ids: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    prompt_tokens: int = 0
    cached: bool = False
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "logprobs": list(self.logprobs),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict, *, cached: bool = False) -> GenerationResult:
        return cls(
            text=data["text"],
            token_ids=list(data["token_ids"]),
            logprobs=list(data["logprobs"]),
            finish_reason=data["finish_reason"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            cached=cached,
        )


class PromptTooLongError(ValueError):
    """A prompt does not fit the model's context; the message names the document."""
