"""Batched teacher-forced forwards with autograd, for the training losses: a prefix shared by
many rows is run once and its KV cache is expanded over them, rows are right padded into one
forward (``generation/rows.py``: attention mask + explicit position ids, each row continuing
after its own :class:`~spacy_llama.generation.rows.Past`), and logits are computed only at
the positions that are scored (a full ``(rows x tokens x vocabulary)`` matrix is most of the
memory of a naive forward).

The values equal those of one unpadded forward per row (within float tolerance). This is the
transformers path with the graph kept: the LoRA layers peft injects are in the transformers
modules, which the engine's fused decoder does not call.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch

from ..generation.rows import Past, forward_after

__all__ = ["Past", "logprobs_at", "parts", "run"]


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
    decoder, _ = parts(module)
    device = next(module.parameters()).device
    out, after = forward_after(decoder, rows, past, device=device, keep=keep)
    return out.last_hidden_state, after


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
