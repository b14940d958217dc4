"""The validated ``[components.llama.generation]`` section."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List

from pydantic import BaseModel, ConfigDict, Field


class GenerationConfig(BaseModel):
    """Sampling and stopping parameters. ``temperature = 0`` is greedy; ``top_k = 0`` is off
    (Meta's reference semantics, unlike transformers' default of 50)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int = 0
    stop: List[str] = Field(default_factory=list)
    stop_token_ids: List[int] = Field(default_factory=list)
    echo: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def fingerprint(self) -> str:
        """A stable hash of every parameter, for cache keys."""
        payload: Dict[str, Any] = self.model_dump()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
