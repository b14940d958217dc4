"""Continuous batching over :class:`~spacy_llama.generation.decoder.FastLlama`.

``batch_size`` slots decode together. When a sequence finishes, the last live slot moves
into its place (live slots stay a prefix of the cache, so every step works on views, never
copies), and once a quarter of the slots are free the next prompts are prefilled into them:
the batch stays full until the queue runs dry. The prompt prefix every request shares
(chat template, system prompt, instruction, few-shot examples) is computed once and copied
into each slot instead of being recomputed for every document.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, List, Optional, Sequence

import torch

from .decoder import FastLlama, KVCache
from .stopping import SequenceState, Stepper

MIN_SHARED_PREFIX = 4  # shorter shared prefixes are not worth a separate pass
# Padded prompt tokens per prefill pass. Prompts are sorted by length, so small passes waste
# little on padding (sample corpus: 30% padding in one pass of 32, 7% in passes of ~1024
# tokens), while ~1000 rows still keep the GEMMs at full speed. Also bounds memory.
PREFILL_TOKENS = 1024


def shared_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    if len(prompts) < 2:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1  # every prompt keeps at least one token of its own
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return n if n >= MIN_SHARED_PREFIX else 0


class ContinuousBatcher:
    def __init__(
        self,
        fast: FastLlama,
        stepper: Stepper,
        *,
        batch_size: int,
        max_new_tokens: int,
        prefix_cache: bool = True,
    ) -> None:
        self.fast = fast
        self.stepper = stepper
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prefix_cache = prefix_cache
        self.prefill_calls: List[int] = []  # rows per prefill, for tests and benchmarks

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        seqs: Sequence[SequenceState],
        on_done: Callable[[SequenceState], None],
    ) -> None:
        """Decode ``seqs[i]`` from ``prompts[i]``; ``on_done`` is called as each finishes."""
        if not prompts:
            return
        fast = self.fast
        slots = min(self.batch_size, len(prompts))
        start = shared_prefix_len(prompts) if self.prefix_cache else 0
        capacity = max(len(p) for p in prompts) + self.max_new_tokens
        cache = fast.new_cache(slots, capacity)
        prefix: Optional[KVCache] = None
        if start:
            prefix = fast.new_cache(1, start)
            fast.prefix(prompts[0][:start], prefix, 0)
        # Longest first: similar lengths prefill together, and peak memory shows at once.
        queue: Deque[int] = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
        live: List[int] = []  # request index per slot; slots [0, len(live)) are in use
        lengths: List[int] = []  # cached keys per slot
        refill_at = max(1, slots // 4)
        while queue or live:
            free = slots - len(live)
            if queue and (free >= refill_at or not live):
                take = [queue.popleft() for _ in range(min(free, len(queue)))]
                logits = self._prefill(prompts, take, cache, prefix, start, len(live))
                live += take
                lengths += [len(prompts[i]) for i in take]
                self._advance(
                    logits, live, lengths, seqs, cache, on_done, first=len(live) - len(take)
                )
                continue
            tokens = torch.tensor([seqs[i].tokens[-1] for i in live], device=fast.device)
            logits = fast.decode(tokens, torch.tensor(lengths), cache)
            lengths = [n + 1 for n in lengths]
            self._advance(logits, live, lengths, seqs, cache, on_done, first=0)

    def _prefill(
        self,
        prompts: Sequence[Sequence[int]],
        take: List[int],
        cache: KVCache,
        prefix: Optional[KVCache],
        start: int,
        first_slot: int,
    ) -> torch.Tensor:
        slot_ids = list(range(first_slot, first_slot + len(take)))
        if prefix is not None:
            for slot in slot_ids:
                cache.k[:, slot, :, :start] = prefix.k[:, 0]
                cache.v[:, slot, :, :start] = prefix.v[:, 0]
        suffixes = [list(prompts[i][start:]) for i in take]
        outs = []
        for group in _groups([len(x) for x in suffixes], PREFILL_TOKENS):
            width = max(len(suffixes[k]) for k in group)
            ids = torch.zeros((len(group), width), dtype=torch.long)
            for row, k in enumerate(group):
                ids[row, : len(suffixes[k])] = torch.tensor(suffixes[k])
            self.prefill_calls.append(len(group))
            outs.append(
                self.fast.prefill(
                    ids.to(self.fast.device),
                    torch.tensor([len(suffixes[k]) for k in group]),
                    cache,
                    torch.tensor([slot_ids[k] for k in group]),
                    start=start,
                )
            )
        return torch.cat(outs)

    def _advance(
        self,
        logits: torch.Tensor,
        live: List[int],
        lengths: List[int],
        seqs: Sequence[SequenceState],
        cache: KVCache,
        on_done: Callable[[SequenceState], None],
        *,
        first: int,
    ) -> None:
        """Choose tokens for slots [first, len(live)); retire finished slots by compaction."""
        done = self.stepper.step(logits, [seqs[i] for i in live[first:]])
        finished = [first + k for k, d in enumerate(done) if d]
        for slot in reversed(finished):  # descending: the last live slot is never finished
            on_done(seqs[live[slot]])
            last = len(live) - 1
            if slot != last:
                cache.move(last, slot)
                live[slot], lengths[slot] = live[last], lengths[last]
            live.pop()
            lengths.pop()


def _groups(lengths: Sequence[int], budget: int) -> List[List[int]]:
    """Consecutive groups whose padded size (rows x longest) stays within ``budget``."""
    groups: List[List[int]] = []
    current: List[int] = []
    longest = 0
    for k, n in enumerate(lengths):
        if current and max(longest, n) * (len(current) + 1) > budget:
            groups.append(current)
            current, longest = [], 0
        current.append(k)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups
