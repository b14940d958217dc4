"""Rows of token ids after a shared prefix: the one place that pads them, masks them, gives
them positions, finds the prefix they share and groups them under a budget.

Every batched pass of the package is some rows (prompts, prompt suffixes, candidates, spans'
pieces) that may continue a shared prefix (a chat template, an instruction, a prompt whose
candidates are scored). Its callers: continuous batching and the portable decode loop,
scoring, the training losses (``training/forward.py``) and the listener features
(``features/batching.py``).

Right padding is the default: a causal model's real tokens never see the pads after them,
and every row's positions run from where its own prefix ends, so a row's values do not
depend on the rows beside it (up to the last bits of a batched product, which
``features/batching.py`` also pins down). Left padding (:func:`pad_left`) is only for the
portable decode loop, whose rows all end at the last column so one step appends one token
to each.

:func:`forward_after` is the transformers pass over right-padded rows after a cached
:class:`Past`; row ``j`` continues after its own ``lengths[j]`` real tokens, whatever the
padding before it, so padded positions inside a row's cache are masked out. It is one of
the package's three LLaMA forward paths (docs/architecture.md), and exists because the other
two cannot serve its callers: the fused decoder (``decoder.py``) keeps no graph, bypasses
peft's LoRA layers and keeps no per-layer states, and the transformers decode loop
(``transformers_loop.py``) is a left-padded generation loop. Its callers: scoring when the
engine has no fused decoder (another architecture, ``device_map``), the training losses
(with the graph), the listener features (eager attention, every layer's states).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

Rows = Sequence[Sequence[int]]
Layers = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]  # per layer: keys, values


# -- shared prefixes ------------------------------------------------------------------------
def common_prefix(rows: Rows) -> int:
    """How many leading tokens all ``rows`` have in common (0 for no rows)."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for j in range(n):
        if any(r[j] != first[j] for r in rows[1:]):
            return j
    return n


def shared_prefix(rows: Rows, *, min_shared: int = 1) -> int:
    """The prefix worth running once for all ``rows``: their common prefix, leaving every row
    at least one token of its own (its last position predicts what follows). 0 for fewer than
    two rows (nothing to share) or a prefix shorter than ``min_shared``."""
    if len(rows) < 2:
        return 0
    n = max(0, min(common_prefix(rows), min(len(r) for r in rows) - 1))
    return n if n >= min_shared else 0


def prefix_runs(prefixes: Rows, *, min_shared: int = 16) -> List[List[int]]:
    """Runs of (sorted) ``prefixes`` that share a long common prefix, as index lists.

    A run ends when the next prefix shares fewer than ``min_shared`` tokens with the run's
    first, or clearly less (3/4) than the run shares so far: the entities of one doc stay
    together instead of falling back to the instruction all docs share.
    """
    runs: List[List[int]] = []
    shared = 0
    for k, ids in enumerate(prefixes):
        if runs:
            common = common_prefix([prefixes[runs[-1][0]], ids])
            floor = max(min_shared, (3 * shared) // 4 if len(runs[-1]) > 1 else 0)
            if common >= floor:
                shared = common if len(runs[-1]) == 1 else min(shared, common)
                runs[-1].append(k)
                continue
        runs.append([k])
        shared = 0
    return runs


# -- budgets --------------------------------------------------------------------------------
def group_by_sum(sizes: Sequence[int], limit: Optional[int]) -> List[List[int]]:
    """Consecutive indices grouped so that each group's summed size is at most ``limit``
    (a group holds at least one index; no limit: one group)."""
    if limit is None:
        return [list(range(len(sizes)))] if sizes else []
    out: List[List[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if out and total + size <= limit:
            out[-1].append(i)
            total += size
        else:
            out.append([i])
            total = size
    return out


def group_by_padded_size(lengths: Sequence[int], budget: int) -> List[List[int]]:
    """Consecutive indices grouped so that each group's padded size (rows x longest) is at
    most ``budget`` (a row longer than the budget runs alone)."""
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


# -- padding, masks, positions --------------------------------------------------------------
def pad_right(
    rows: Rows, pad_id: int = 0, *, width: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask ``(rows, width)`` (int64, CPU), each row's tokens
    first; ``width`` defaults to the longest row."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_left(rows: Rows, pad_id: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask ``(rows, longest)`` (int64, CPU), each row's tokens
    last."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def right_positions(start: torch.Tensor, width: int) -> torch.Tensor:
    """Position ids ``(n, width)`` of right-padded rows that continue after ``start[j]``
    tokens each (pads get positions too; they are masked)."""
    return start[:, None] + torch.arange(width, device=start.device)[None, :]


def left_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: each row's first real token is at 0 (pads at 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


# -- the transformers pass after a cached prefix ---------------------------------------------
@dataclass
class Past:
    """The cached keys/values of a batch of rows, their mask and real lengths."""

    layers: Layers
    mask: torch.Tensor  # (n, L): 1 where a cached position holds a real token
    lengths: torch.Tensor  # (n,): real tokens per row (the next row's position id)

    def select(self, index: Sequence[int]) -> Past:
        """The rows ``index`` (repeats allowed): the cache expanded over candidates."""
        idx = torch.tensor(list(index), dtype=torch.long, device=self.mask.device)
        layers = tuple((k.index_select(0, idx), v.index_select(0, idx)) for k, v in self.layers)
        return Past(layers, self.mask.index_select(0, idx), self.lengths.index_select(0, idx))


def forward_after(
    module: Any,
    rows: Rows,
    past: Optional[Past],
    *,
    device: Any,
    pad_id: int = 0,
    keep: bool = True,
    width: Optional[int] = None,
    **options: Any,
) -> Tuple[Any, Optional[Past]]:
    """``module``'s output on ``rows``, right padded (to ``width``, default the longest),
    after ``past`` (attention mask and explicit position ids); with ``keep``, the Past of
    the rows extended by them. ``options`` go to the module (``output_hidden_states``).

    ``module`` is a transformers decoder stack (``.last_hidden_state``) or a causal LM
    (``.logits``): anything that takes ``input_ids``, ``attention_mask``, ``position_ids``
    and ``past_key_values``. Runs under the caller's grad mode (the training losses and
    trainable features keep the graph, scoring runs under ``torch.inference_mode``)."""
    from transformers import DynamicCache

    ids, mask = pad_right(rows, pad_id, width=width)
    ids, mask = ids.to(device), mask.to(device)
    n = len(rows)
    start = past.lengths if past is not None else torch.zeros(n, dtype=torch.long, device=device)
    full = mask if past is None else torch.cat([past.mask, mask], dim=1)
    cache = DynamicCache.from_legacy_cache(past.layers) if past is not None else None
    out = module(
        input_ids=ids,
        attention_mask=full,
        position_ids=right_positions(start, ids.shape[1]),
        past_key_values=cache,
        use_cache=keep,
        **options,
    )
    if not keep:
        return out, None
    lengths = start + mask.sum(dim=1)
    return out, Past(out.past_key_values.to_legacy_cache(), full, lengths)
