"""The prompt formatter tasks receive: chat templates and token counts, no torch."""

from __future__ import annotations

import logging
from typing import List, Optional, Tuple, Union

from ..models.base import LlamaModel
from ..types import GenerationRequest, Prompt

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
            # The chat template writes its own special tokens (BOS, role markers); the
            # messages inside it are user text, never parsed for control tokens.
            prompt = self.model.apply_chat_template(user, system)
            spans = content_spans(prompt, [system or "", user])
            return GenerationRequest(prompt=Prompt(prompt, spans), add_special_tokens=False)
        # No chat template: the whole rendered prompt is user text (BOS is still added).
        return GenerationRequest(prompt=Prompt(user, ((0, len(user)),)), add_special_tokens=True)

    def count(self, request: GenerationRequest) -> int:
        return self.model.count_tokens(
            request.prompt, add_special_tokens=request.add_special_tokens
        )


def content_spans(prompt: str, contents: List[str]) -> Tuple[Tuple[int, int], ...]:
    """Where the chat template put each message's content, in order (a template that
    trims contents is matched by the trimmed text). A content not found verbatim is not
    marked (its control strings would then be parsed, as before)."""
    spans = []
    pos = 0
    for content in contents:
        for needle in (content, content.strip()):
            if not needle:
                break
            at = prompt.find(needle, pos)
            if at >= 0:
                spans.append((at, at + len(needle)))
                pos = at + len(needle)
                break
    return tuple(spans)
