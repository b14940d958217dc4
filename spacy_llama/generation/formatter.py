"""The prompt formatter tasks receive: chat templates and token counts, no torch."""

from __future__ import annotations

import logging
from typing import List, Optional, Union

from ..models.base import LlamaModel
from ..types import GenerationRequest

logger = logging.getLogger("spacy_llama")


class ModelPromptFormatter:
    def __init__(self, model: LlamaModel, *, max_new_tokens: int) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens

    @property
    def budget(self) -> int:
        return self.model.context_length - self.max_new_tokens

    def uses_chat(self, chat: Union[bool, str]) -> bool:
        """``chat = "auto"`` becomes whether the tokenizer has a chat template; the choice is
        logged, since the same config gives different prompts with different models."""
        if chat != "auto":
            return bool(chat)
        used = self.model.has_chat_template
        logger.info(
            '[spacy-llama] chat = "auto": %s for the model at %s.',
            "using its chat template" if used else "no chat template, so plain prompts",
            self.model.source,
        )
        return used

    def format(
        self, user: str, *, chat: Union[bool, str], system: Optional[str]
    ) -> GenerationRequest:
        if chat is True or (chat == "auto" and self.model.has_chat_template):
            # The chat template writes its own special tokens (BOS, role markers).
            return GenerationRequest(
                prompt=self.model.apply_chat_template(user, system), add_special_tokens=False
            )
        return GenerationRequest(prompt=user, add_special_tokens=True)

    def decode(self, ids: List[int]) -> str:
        """Token ids as text (tasks place each generated token in the answer with it, to
        score the spans they write: tasks/confidence.py)."""
        return self.model.decode(ids)

    def count(self, request: GenerationRequest) -> int:
        return self.model.count_tokens(
            request.prompt, add_special_tokens=request.add_special_tokens
        )
