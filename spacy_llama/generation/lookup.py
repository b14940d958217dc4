"""Draft tokens by prompt lookup, for greedy decoding.

Annotation outputs copy their input: a summary repeats names and phrases of the text, an
entity list repeats its spans. When the last few generated tokens also occur earlier in the
prompt (or the output), the tokens that followed them there are a good guess for what comes
next. The engine feeds such a guess (a *draft*) to the model together with the last chosen
token, in one forward pass, and keeps the drafted tokens the model itself would have chosen:
the output is the greedy output, only reached in fewer steps.

Drafts cost: the verify pass runs every sequence at the width of the longest draft. A CPU
step over ``x`` positions takes about ``STEP_TOKENS + x`` time units (reading the weights
costs as much as ~16 positions of arithmetic: the weight bytes over the memory bandwidth,
against the FLOPs per position over the matmul peak; 12-17 measured here for float32, bf16
and int8 alike). Each step picks the draft width with the most expected tokens per unit of
time, expecting drafted token ``i`` to be kept with probability ``p**i``, where ``p`` is the
share of checked drafted tokens kept so far (``DraftStats``). So drafting pays on small
batches and the tail of a corpus when outputs copy their input (summaries, extraction: 2x at
one sequence), and stops by itself when they do not (free continuation) or the batch is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

STEP_TOKENS = 16  # a step's fixed cost (reading the weights), in positions of arithmetic
MAX_DRAFT = 6  # drafted tokens per sequence and step
NGRAMS = (3, 2, 1)  # the longest match wins; the latest occurrence of it


@dataclass
class DraftStats:
    """Drafted tokens fed to the model, checked against its choice, and kept (each kept one
    is a decode step saved); held by the engine across batches."""

    drafted: int = 0
    checked: int = 0
    kept: int = 0

    @property
    def keep_rate(self) -> float:
        return (self.kept + 1) / (self.checked + 2)  # an even prior before any evidence


class PromptLookup:
    """Per-request n-gram index of prompt + output, updated as tokens are generated."""

    def __init__(
        self,
        *,
        max_draft: int = MAX_DRAFT,
        step_tokens: int = STEP_TOKENS,
        stats: Optional[DraftStats] = None,
    ) -> None:
        self.max_draft = max_draft
        self.step_tokens = step_tokens
        self.stats = stats if stats is not None else DraftStats()
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
        """Cut every draft to the width that maximises expected tokens per unit of time (see
        the module doc); width 1 (no drafts, a plain decode step) when nothing beats it."""
        n, p = len(drafts), self.stats.keep_rate
        # gains[k]: expected kept tokens of a draft cut to k tokens: p + p^2 + ... + p^k
        gains = [0.0]
        for k in range(1, self.max_draft + 1):
            gains.append(gains[-1] + p**k)
        best, best_rate = 1, n / (self.step_tokens + n)
        for width in range(2, self.max_draft + 2):
            expected = n + sum(gains[min(len(d), width - 1)] for d in drafts)
            rate = expected / (self.step_tokens + n * width)
            if rate > best_rate:
                best, best_rate = width, rate
        return [d[: best - 1] for d in drafts]
