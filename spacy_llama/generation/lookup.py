"""Draft tokens by prompt lookup, for greedy decoding.

Annotation outputs copy their input: a summary repeats names and phrases of the text, an
entity list repeats its spans. When the last few generated tokens also occur earlier in the
prompt (or the output), the tokens that followed them there are a good guess for what comes
next. The engine feeds such a guess (a *draft*) to the model together with the last chosen
token, in one forward pass, and keeps the drafted tokens the model itself would have chosen:
the output is the greedy output, only reached in fewer steps.

A step is worth drafting into only while it is bound by reading the weights, not by
arithmetic: on a CPU that holds up to about ``STEP_TOKENS`` positions per step (the weight
bytes over the memory bandwidth, against the FLOPs per token over the matmul peak; 12-16 here
for float32, bf16 and int8 alike). So drafts fill the slack of small batches (up to 7
sequences) and of the tail of a corpus, and a fuller batch runs as before.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

STEP_TOKENS = 16  # tokens per decode step, drafts included, before drafting stops paying
MAX_DRAFT = 6  # drafted tokens per sequence and step
NGRAMS = (3, 2, 1)  # the longest match wins; the latest occurrence of it


class PromptLookup:
    """Per-request n-gram index of prompt + output, updated as tokens are generated."""

    def __init__(self, *, max_draft: int = MAX_DRAFT, step_tokens: int = STEP_TOKENS) -> None:
        self.max_draft = max_draft
        self.step_tokens = step_tokens
        self._ctx: Dict[int, List[int]] = {}
        self._prompt_len: Dict[int, int] = {}
        self._index: Dict[int, Dict[Tuple[int, ...], int]] = {}

    def start(self, key: int, prompt: Sequence[int]) -> None:
        self._ctx[key] = []
        self._index[key] = {}
        self._prompt_len[key] = len(prompt)
        self._extend(key, prompt)

    def finish(self, key: int) -> None:
        self._ctx.pop(key, None)
        self._index.pop(key, None)
        self._prompt_len.pop(key, None)

    def _extend(self, key: int, tokens: Sequence[int]) -> None:
        ctx, index = self._ctx[key], self._index[key]
        for tok in tokens:
            i = len(ctx)  # the position ``tok`` takes: it follows every n-gram ending at i - 1
            for n in NGRAMS:
                if i >= n:
                    index[tuple(ctx[i - n : i])] = i
            ctx.append(tok)

    def draft(self, key: int, generated: Sequence[int], limit: int) -> List[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest
        n-gram the sequence ends with."""
        ctx = self._ctx[key]
        self._extend(key, generated[len(ctx) - self._prompt_len[key] :])
        if limit <= 0:
            return []
        index = self._index[key]
        for n in NGRAMS:
            if len(ctx) > n:
                pos = index.get(tuple(ctx[-n:]))
                # the n-gram that ends the sequence has no follower yet, so it is not indexed
                # by this occurrence: ``pos`` is an earlier one
                if pos is not None:
                    return ctx[pos : pos + limit]
        return []

    def allot(self, drafts: List[List[int]]) -> List[List[int]]:
        """Cut drafts to the step budget. The verify pass pads every sequence to the longest
        draft, so the step runs ``sequences x (1 + longest)`` positions: that product, not
        the drafted tokens alone, must stay within ``step_tokens``."""
        depth = min(self.max_draft, self.step_tokens // max(1, len(drafts)) - 1)
        return [d[: max(depth, 0)] for d in drafts]
