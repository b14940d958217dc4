"""The portable decode loop: any transformers causal LM through ``model(...)`` and a
``DynamicCache``.

Why this forward path exists (docs/architecture.md lists the three): :mod:`.decoder` is
LLaMA-only and single-device, so another architecture, a model spread over devices with
``device_map``, or ``fast_decoder = false`` decodes here. Rows are left padded
(``rows.pad_left``): every row ends at the last column, so one step appends one token to
each row of the one ``DynamicCache`` and finished rows are dropped from it. Right padding
would change which cached positions are masked, and with them the last bits of the
numbers this loop has always produced."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

import torch

from .alternatives import Decision
from .decode_step import Scored, Scorer, SequenceState, Stepper
from .rows import left_positions, pad_left, pad_right


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
    input_ids, mask = pad_left(prompts, pad_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = left_positions(mask)
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
        extra: Dict[int, int] = {}
        decide = _decider(lm, prompts, seqs, alive, extra, device, pad_id)
        done = stepper.step(logits, [seqs[r] for r in alive], decide)
        keep = [b for b, d in enumerate(done) if not d]
        for b, d in enumerate(done):
            if d:
                on_done(seqs[alive[b]])
        if not keep:
            return
        fed = [1 + extra.get(b, 0) for b in keep]  # a decided row feeds its whole value
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)  # type: ignore[attr-defined]
            mask, last_pos = mask[idx], last_pos[idx]
            alive = [alive[b] for b in keep]
        # right-aligned: a row with fewer new tokens has masked holes on the left
        tokens, new = pad_left([seqs[r].tokens[-m:] for r, m in zip(alive, fed)], pad_id)
        new = new.to(device)
        pos = last_pos[:, None] + new.cumsum(-1)  # the holes sit at the row's last position
        mask = torch.cat([mask, new], dim=1)
        last_pos = last_pos + torch.tensor(fed, device=device)
        out = lm(
            input_ids=tokens.to(device),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]


def _decider(
    lm: Any,
    prompts: Sequence[Sequence[int]],
    seqs: Sequence[SequenceState],
    alive: List[int],
    extra: Dict[int, int],
    device: Any,
    pad_id: int,
) -> Scorer:
    """Closed sets of alternatives (``alternatives.py``) scored by one plain forward pass
    of the row's prompt and output plus each alternative (no cache: this loop's cache is
    one left-padded batch); the chosen value is fed at the next step."""

    def decide(k: int, decision: Decision) -> Scored:
        r = alive[k]
        base = list(prompts[r]) + list(seqs[r].tokens)
        ids, att = pad_right([base + sc[:-1] for sc in decision.scored], pad_id)
        lp = torch.log_softmax(
            lm(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float(), dim=-1
        )
        at = len(base)
        later = [
            [float(lp[i, at + j, sc[j + 1]]) for j in range(len(sc) - 1)]
            for i, sc in enumerate(decision.scored)
        ]

        def keep(i: int) -> None:
            extra[k] = len(decision.rests[i]) - 1

        return later, keep

    return decide


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
