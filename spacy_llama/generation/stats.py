"""What an engine has done so far (read by ``annotate`` for its summary)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStats:
    model_calls: int = 0  # requests that reached the model
    cache_hits: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    repaired_answers: int = 0  # answers with a lone surrogate or a non-finite log-probability
    scored_tokens: int = 0  # tokens whose log-probability a scoring request read
