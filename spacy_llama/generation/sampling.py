"""Token choice: greedy, or temperature / top-k / top-p with one RNG per document.

Log-probabilities are always taken from the raw logits (log-softmax before temperature and
top-p), as Meta's reference ``generate`` reports them.
"""

from __future__ import annotations

import hashlib
from typing import List, Sequence

import torch


def request_seed(seed: int, prompt_ids: Sequence[int]) -> int:
    """A per-document seed: same prompt + same config seed = same draws, in any batch."""
    h = hashlib.sha256(str(seed).encode())
    h.update(b"\0")
    h.update(",".join(map(str, prompt_ids)).encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def make_generators(seeds: Sequence[int]) -> List[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def filter_logits(
    logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """Warp a (B, V) float tensor of raw logits into sampling logits."""
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(dim=-1)
        # Meta's rule: drop a token when the mass *before* it already exceeds top_p.
        drop = (cum - probs) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def choose_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Pick one token per row. ``generators[i]`` drives row ``i`` only."""
    if temperature == 0.0:
        return torch.argmax(logits, dim=-1)
    warped = filter_logits(logits.float(), temperature=temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(warped, dim=-1).cpu()
    out = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(out).to(logits.device)
