"""The portable decode loop: any transformers causal LM through ``model(...)`` and a
``DynamicCache``. Used when :mod:`.decoder` does not support the architecture (or the
model is spread over devices with ``device_map``)."""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

import torch

from .stopping import SequenceState, Stepper


@torch.inference_mode()
def decode_batch(
    lm: Any,
    prompts: Sequence[Sequence[int]],
    seqs: Sequence[SequenceState],
    stepper: Stepper,
    *,
    pad_id: int,
    on_done: Callable[[SequenceState], None],
) -> None:
    """Left-padded batch; finished rows are dropped from the batch and its cache."""
    from transformers import DynamicCache

    device = next(lm.parameters()).device
    n = len(prompts)
    width = max(len(p) for p in prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = lm(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    last_pos = positions[:, -1]
    alive = list(range(n))
    logits = out.logits[:, -1, :]
    while True:
        done = stepper.step(logits, [seqs[r] for r in alive])
        keep = [b for b, d in enumerate(done) if not d]
        for b, d in enumerate(done):
            if d:
                on_done(seqs[alive[b]])
        if not keep:
            return
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)  # type: ignore[attr-defined]
            mask, last_pos = mask[idx], last_pos[idx]
            alive = [alive[b] for b in keep]
        tokens = torch.tensor([seqs[r].tokens[-1] for r in alive], device=device)
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        last_pos = last_pos + 1
        out = lm(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]


def decode_all(
    lm: Any,
    prompts: Sequence[Sequence[int]],
    seqs: Sequence[SequenceState],
    stepper: Stepper,
    *,
    batch_size: int,
    pad_id: int,
    on_done: Callable[[SequenceState], None],
) -> List[int]:
    """Micro-batches of ``batch_size`` prompts sorted by length; returns the batch sizes."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    sizes = []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        sizes.append(len(chunk))
        decode_batch(
            lm,
            [prompts[i] for i in chunk],
            [seqs[i] for i in chunk],
            stepper,
            pad_id=pad_id,
            on_done=on_done,
        )
    return sizes
