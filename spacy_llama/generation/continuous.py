"""Continuous batching over :class:`~spacy_llama.generation.decoder.FastLlama`.

``batch_size`` slots decode together. When a sequence finishes, the last live slot moves
into its place (live slots stay a prefix of the cache, so every step works on views, never
copies), and once a quarter of the slots are free the next prompts are prefilled into them:
the batch stays full until the queue runs dry. The prompt prefix every request shares
(chat template, system prompt, instruction, few-shot examples) is computed once and copied
into each slot instead of being recomputed for every document. In greedy decoding, steps
with few live sequences also verify tokens drafted by prompt lookup (``lookup.py``).

A constrained sequence's grammar state lives on its ``SequenceState``, not on its slot, so
it follows the sequence through refill and compaction; drafts are cut to the prefix its
grammar allows before they are verified. Verifying needs no rollback: the matcher accepts
only the tokens the stepper keeps, one position at a time, so after a rejected draft token
it stands where the sequence does.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set

import torch

from ..models import qlinear
from .alternatives import StepScorer
from .decode_step import Scorer, SequenceState, Stepper
from .decoder import FastLlama, KVCache
from .lookup import STEP_TOKENS, DraftStats, PromptLookup
from .rows import group_by_padded_size, pad_right, shared_prefix

MIN_SHARED_PREFIX = 4  # shorter shared prefixes are not worth a separate pass
# Padded prompt tokens per prefill pass. Prompts are sorted by length, so small passes waste
# little on padding (sample corpus: 30% padding in one pass of 32, 7% in passes of ~1024
# tokens), while ~1000 rows still keep the GEMMs at full speed. Also bounds memory.
PREFILL_TOKENS = 1024
MAX_FORCED = 8  # forced (fast-forward) tokens verified per row and step


def shared_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """The prompt prefix computed once and copied into every slot (0: none worth it)."""
    return shared_prefix(prompts, min_shared=MIN_SHARED_PREFIX)


def rope_limit(model: Any) -> Optional[int]:
    """The first position at which the model's rotary embedding switches a whole call to
    other frequencies; None when it never does. transformers' dynamic NTK and LongRoPE
    modules (``dynamic_rope_update``) pick the frequencies of every position in a call from
    the call's largest position, so one padded position there changes every row's keys."""
    rope: Any = getattr(getattr(model, "model", None), "rotary_emb", None)
    kind = str(getattr(rope, "rope_type", "default"))
    if "dynamic" in kind:  # the same test as dynamic_rope_update's
        return int(rope.original_max_seq_len)
    if kind == "longrope":
        cfg = rope.config
        return int(getattr(cfg, "original_max_position_embeddings", cfg.max_position_embeddings))
    return None


class ContinuousBatcher:
    def __init__(
        self,
        fast: FastLlama,
        stepper: Stepper,
        *,
        batch_size: int,
        max_new_tokens: int,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        draft_stats: Optional[DraftStats] = None,
        decide_alternatives: bool = True,
        fast_forward: bool = True,
    ) -> None:
        self.fast = fast
        self.stepper = stepper
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prefix_cache = prefix_cache
        self.decide_alternatives = decide_alternatives  # closed sets scored as wholes
        self.max_forced = MAX_FORCED if fast_forward else 0  # forced tokens verified per step
        self.forced_fed = 0  # forced tokens fed as drafts, for tests and benchmarks
        self._forced_rows: Set[int] = set()  # live slots whose draft this step is forced
        # drafts are only checked against the greedy choice
        self.lookup = (
            PromptLookup(stats=draft_stats) if prompt_lookup and stepper.config.greedy else None
        )
        self.rope_limit = rope_limit(fast.hf)
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
        # the configured batch size, not this call's: a doc's path never depends on its batch
        with qlinear.wide_run(self.batch_size):
            self._run(prompts, seqs, on_done)

    def _run(
        self,
        prompts: Sequence[Sequence[int]],
        seqs: Sequence[SequenceState],
        on_done: Callable[[SequenceState], None],
    ) -> None:
        fast = self.fast
        slots = min(self.batch_size, len(prompts))
        start = shared_prefix_len(prompts) if self.prefix_cache else 0
        # room for a step's drafts past the last position a sequence can reach
        capacity = max(len(p) for p in prompts) + self.max_new_tokens + 1
        capacity += max(self.lookup.max_draft if self.lookup is not None else 0, self.max_forced)
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
                if self.lookup is not None:
                    for i in take:
                        self.lookup.start(i, prompts[i])
                logits = self._prefill(prompts, take, cache, prefix, start, len(live))
                live += take
                lengths += [len(prompts[i]) for i in take]
                self._advance(
                    logits, live, lengths, seqs, cache, on_done, first=len(live) - len(take)
                )
                continue
            drafts = self._drafts(live, lengths, seqs)
            if any(drafts):
                self._verify(drafts, live, lengths, seqs, cache, on_done)
                continue
            tokens = torch.tensor([seqs[i].tokens[-1] for i in live], device=fast.device)
            logits = fast.decode(tokens, torch.tensor(lengths), cache)
            lengths[:] = [n + 1 for n in lengths]
            self._advance(logits, live, lengths, seqs, cache, on_done, first=0)

    def _drafts(
        self, live: List[int], lengths: List[int], seqs: Sequence[SequenceState]
    ) -> List[List[int]]:
        """Per live slot, the tokens to verify after its last one: a constrained row's
        forced tokens (llguidance's fast-forward tokens: the mask allows nothing else, so
        the model's choice under it keeps them, greedy or sampled), else a prompt-lookup
        draft (greedy only) cut to what its grammar allows."""
        lookup = self.lookup
        most = max(lookup.max_draft if lookup is not None else 0, self.max_forced)
        if not most:
            return []
        room = self._room(lengths, most)
        forced: List[List[int]] = []
        for i in live:
            seq = seqs[i]
            # r tokens left: a step chooses at most r, so at most r - 1 drafts count
            limit = min(room, self.max_forced, self.max_new_tokens - len(seq.tokens) - 1)
            f = seq.grammar.forced_tokens() if seq.grammar is not None and limit > 0 else []
            forced.append(f[: max(0, limit)])
        drafts: List[List[int]] = [[] for _ in live]
        if lookup is not None:
            for k, i in enumerate(live):
                left = self.max_new_tokens - len(seqs[i].tokens) - 1
                limit = min(room, lookup.max_draft, left)
                if not forced[k]:
                    drafts[k] = grammar_prefix(seqs[i], lookup.draft(i, seqs[i].tokens, limit))
            drafts = lookup.allot(drafts)
        self._forced_rows = set()
        if not any(forced):
            return drafts
        width = forced_width([f or d for f, d in zip(forced, drafts)], STEP_TOKENS)
        if width > 1:
            self._forced_rows = {k for k, f in enumerate(forced) if f}
            self.forced_fed += sum(min(len(f), width - 1) for f in forced)
        return [(f or d)[: width - 1] for f, d in zip(forced, drafts)]

    def _room(self, lengths: List[int], most: int) -> int:
        """Drafts a step may verify. The pass pads every row to the widest draft, so the
        longest row's padding must stay below the rotary limit: a padded position at or past
        it would switch the frequencies of the whole call, every row's queries and cached
        keys, which decoding the same tokens one by one never does. Costs drafts only in
        the last few steps before the limit."""
        top = max(lengths)  # the position the longest row's last token is fed at
        if self.rope_limit is None or top >= self.rope_limit:
            # Already past it, that row's own token switches every call, decode or verify.
            # Only LongRoPE gets here (original_max_position_embeddings below the context;
            # the engine keeps prompt + max_new_tokens inside dynamic NTK's limit), and its
            # long frequencies do not depend on the position: padding changes nothing more.
            return most
        return min(most, self.rope_limit - 1 - top)

    def _verify(
        self,
        drafts: List[List[int]],
        live: List[int],
        lengths: List[int],
        seqs: Sequence[SequenceState],
        cache: KVCache,
        on_done: Callable[[SequenceState], None],
    ) -> None:
        """One pass over each live sequence's last token plus its draft; keep the drafted
        tokens the greedy choice agrees with, and the choice after the last of them."""
        ids, _ = pad_right([[seqs[i].tokens[-1], *draft] for i, draft in zip(live, drafts)])
        width = ids.shape[1]
        logits = self.fast.verify(ids.to(self.fast.device), torch.tensor(lengths), cache)
        finished: List[int] = []
        rows = list(range(len(live)))
        fed = [0] * len(live)
        checked = 0
        for j in range(width):
            extra: Dict[int, int] = {}
            decide = self._decider(
                cache,
                lambda k, rows=rows: rows[k],  # type: ignore[misc]
                lambda k, rows=rows, j=j: lengths[rows[k]] + j + 1,  # type: ignore[misc]
                extra,
            )
            done = self.stepper.step(logits[rows, j], [seqs[live[r]] for r in rows], decide)
            going = []
            for k, (r, d) in enumerate(zip(rows, done)):
                fed[r] += 1 + extra.get(k, 0)  # the token fed at position j is now cached
                if d:
                    finished.append(r)
                elif k in extra:
                    pass  # a decided row wrote its chosen value, not the draft
                elif j < len(drafts[r]):
                    checked += r not in self._forced_rows
                    if seqs[live[r]].tokens[-1] == drafts[r][j]:
                        going.append(r)  # the model chose the drafted token: its logits count
            rows = going
            if not rows:
                break
        for r, k in enumerate(fed):
            lengths[r] += k
        if self.lookup is not None:  # how often lookup's drafts (not forced tokens) are kept
            looked = [r for r in range(len(live)) if r not in self._forced_rows]
            stats = self.lookup.stats
            stats.drafted += sum(len(drafts[r]) for r in looked)
            stats.checked += checked
            stats.kept += sum(fed[r] - 1 for r in looked)
        self._retire(sorted(finished), live, lengths, seqs, cache, on_done)

    def _decider(
        self,
        cache: KVCache,
        slot_of: Callable[[int], int],
        length_of: Callable[[int], int],
        extra: Dict[int, int],
    ) -> Optional[Scorer]:
        """The stepper's scorer of closed sets of alternatives (``alternatives.py``): the
        row's keys and values are copied once per alternative into a scratch cache, every
        alternative's tokens after its first run in one pass from there, and the chosen
        one's keys are copied back, so the row goes on as if it had decoded them.
        ``extra[k]`` gets how many more tokens row ``k`` now has cached."""
        if not self.decide_alternatives:
            return None
        return StepScorer(self.fast, cache, slot_of, length_of, extra)

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
        for group in group_by_padded_size([len(x) for x in suffixes], PREFILL_TOKENS):
            ids, _ = pad_right([suffixes[k] for k in group])
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
        extra: Dict[int, int] = {}
        decide = self._decider(cache, lambda k: first + k, lambda k: lengths[first + k], extra)
        done = self.stepper.step(logits, [seqs[i] for i in live[first:]], decide)
        for k, m in extra.items():
            lengths[first + k] += m
        finished = [first + k for k, d in enumerate(done) if d]
        self._retire(finished, live, lengths, seqs, cache, on_done)

    def _retire(
        self,
        finished: List[int],  # ascending slots
        live: List[int],
        lengths: List[int],
        seqs: Sequence[SequenceState],
        cache: KVCache,
        on_done: Callable[[SequenceState], None],
    ) -> None:
        """Hand finished slots to ``on_done``; the last live slot fills each gap."""
        for slot in reversed(finished):  # descending: the last live slot is never finished
            if self.lookup is not None:
                self.lookup.finish(live[slot])
            on_done(seqs[live[slot]])
            last = len(live) - 1
            if slot != last:
                cache.move(last, slot)
                live[slot], lengths[slot] = live[last], lengths[last]
            live.pop()
            lengths.pop()


def grammar_prefix(seq: SequenceState, draft: List[int]) -> List[int]:
    """The part of ``draft`` the sequence's grammar allows: a pass is never spent on drafted
    tokens the mask would forbid (the model could not choose them)."""
    if seq.grammar is None or not draft:
        return draft
    return draft[: seq.grammar.valid_prefix(draft)]


def forced_width(drafts: List[List[int]], step_tokens: int) -> int:
    """The verify width (1 + drafted tokens) with the most tokens per unit of time when the
    drafts are kept (forced tokens are): a pass over ``x`` positions costs ``step_tokens +
    x`` (``lookup.py``), and every row runs at the width."""
    n = len(drafts)
    best, best_rate = 1, n / (step_tokens + n)
    for width in range(2, max(len(d) for d in drafts) + 2):
        rate = (n + sum(min(len(d), width - 1) for d in drafts)) / (step_tokens + n * width)
        if rate > best_rate:
            best, best_rate = width, rate
    return best
