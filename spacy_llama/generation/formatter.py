"""The prompt formatter tasks receive: chat templates and token counts, no torch."""

from __future__ import annotations

from typing import Optional

from ..models.base import LlamaModel
from ..types import GenerationRequest


class ModelPromptFormatter:
    def __init__(self, model: LlamaModel, *, max_new_tokens: int) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens

    @property
    def budget(self) -> int:
        return self.model.context_length - self.max_new_tokens

    def format(self, user: str, *, chat: bool, system: Optional[str]) -> GenerationRequest:
        if chat:
            # The chat template writes its own special tokens (BOS, role markers).
            return GenerationRequest(
                prompt=self.model.apply_chat_template(user, system), add_special_tokens=False
            )
        return GenerationRequest(prompt=user, add_special_tokens=True)

    def count(self, request: GenerationRequest) -> int:
        return self.model.count_tokens(
            request.prompt, add_special_tokens=request.add_special_tokens
        )
