"""Batched teacher-forced forwards with autograd, for the training losses: a prefix shared by
many rows is run once and its KV cache is expanded over them, rows are right padded into one
forward (attention mask + explicit position ids), and logits are computed only at the
positions that are scored (a full ``(rows x tokens x vocabulary)`` matrix is most of the
memory of a naive forward).

A stage appends tokens to every row of a :class:`Past`: row ``j`` continues after its own
``lengths[j]`` real tokens, whatever the padding before it, so padded positions in the middle
of a row's cache are masked out and the values equal those of one unpadded forward per row
(within float tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

Layers = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]  # per layer: keys, values


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


def parts(module: Any) -> Tuple[Any, Any]:
    """The decoder stack and the output head of a (peft-wrapped) causal LM: the LoRA layers
    are injected into them, so calling them directly trains the same weights."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return base.get_decoder(), base.get_output_embeddings()


def run(
    module: Any, rows: Sequence[Sequence[int]], past: Optional[Past], *, keep: bool = True
) -> Tuple[torch.Tensor, Optional[Past]]:
    """Hidden states ``(n, width, H)`` of ``rows`` (right padded) after ``past``; with
    ``keep``, the Past of the rows extended by them."""
    from transformers import DynamicCache

    decoder, _ = parts(module)
    device = next(module.parameters()).device
    n, width = len(rows), max(len(r) for r in rows)
    ids = torch.zeros((n, width), dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(list(row), dtype=torch.long, device=device)
        mask[j, : len(row)] = 1
    start = past.lengths if past is not None else torch.zeros(n, dtype=torch.long, device=device)
    positions = start[:, None] + torch.arange(width, device=device)[None, :]
    full = mask if past is None else torch.cat([past.mask, mask], dim=1)
    cache = DynamicCache.from_legacy_cache(past.layers) if past is not None else None
    out = decoder(
        input_ids=ids,
        attention_mask=full,
        position_ids=positions,
        past_key_values=cache,
        use_cache=keep,
    )
    if not keep:
        return out.last_hidden_state, None
    lengths = start + mask.sum(dim=1)
    return out.last_hidden_state, Past(out.past_key_values.to_legacy_cache(), full, lengths)


def logprobs_at(
    module: Any, hidden: torch.Tensor, picks: Sequence[Tuple[int, int, int]]
) -> torch.Tensor:
    """log p(token | row, position) for each ``(row, position, token)``, in float32: the
    output head runs on those positions only."""
    if not picks:
        return torch.zeros(0, device=hidden.device)
    _, head = parts(module)
    rows, positions, tokens = (
        torch.tensor(col, dtype=torch.long, device=hidden.device) for col in zip(*picks)
    )
    logits = head(hidden[rows, positions]).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]


def shared_length(rows: Sequence[Sequence[int]]) -> int:
    """The token prefix all ``rows`` share, leaving each at least one token of its own (its
    last position predicts what follows); 0 for a single row (nothing to share)."""
    if len(rows) < 2:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for i in range(max(n, 0)):
        if any(r[i] != first[i] for r in rows):
            return i
    return max(n, 0)


def chunks(sizes: Sequence[int], limit: Optional[int]) -> List[List[int]]:
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
