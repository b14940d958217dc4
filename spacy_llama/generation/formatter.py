"""The prompt formatter tasks receive: chat templates and token counts, no torch."""

from __future__ import annotations

import logging
from typing import List, Optional, Tuple, Union

from ..errors import Errors, FewShotError
from ..models.base import LanguageModel
from ..types import GenerationRequest, Prompt

logger = logging.getLogger("spacy_llama")


class ModelPromptFormatter:
    def __init__(self, model: LanguageModel, *, max_new_tokens: int) -> None:
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

    def decode(self, ids: List[int]) -> str:
        """Token ids as text (tasks place each generated token in the answer with it, to
        score the spans they write: tasks/confidence.py)."""
        return self.model.decode(ids)

    def count(self, request: GenerationRequest) -> int:
        return self.model.count_tokens(
            request.prompt, add_special_tokens=request.add_special_tokens
        )

    def document_start(self, start: str) -> Tuple[bool, List[int]]:
        """What a scored text starts after (Surprisal.v3's ``start``): (add the tokenizer's
        special tokens, ids to put before the text). ``"auto"``: the tokenizer's BOS where
        it adds one; else the document separator ``<|endoftext|>`` where the vocabulary has
        it (the token that precedes a document in pretraining: SmolLM2, GPT-2, Qwen), else
        its BOS or EOS token. ``"none"``: nothing (the first token gets no score). Any other
        value names one token of the vocabulary."""
        tok = self.model.tokenizer
        if start == "none":
            return False, []
        vocab = tok.get_vocab()
        if start != "auto":
            if start not in vocab:
                raise FewShotError(Errors.E833.format(start=start, source=self.model.source))
            return False, [int(vocab[start])]
        plain = self.model.encode("a", add_special_tokens=False)
        special = self.model.encode("a", add_special_tokens=True)
        if len(special) > len(plain) and special[-len(plain) :] == plain:
            return True, []  # the tokenizer adds its own BOS
        for candidate in ("<|endoftext|>", tok.bos_token, tok.eos_token):
            if candidate and candidate in vocab:
                return False, [int(vocab[candidate])]
        raise FewShotError(Errors.E833.format(start=start, source=self.model.source))

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
