"""Per-sequence bookkeeping shared by both decode loops: choose, record, decide to stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from ..types import GenerationResult
from .config import GenerationConfig
from .sampling import choose_tokens


@dataclass
class SequenceState:
    """One request being decoded."""

    index: int  # position in the engine's request list
    prompt_len: int
    generator: Optional[torch.Generator] = None
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    text: Optional[str] = None  # set when a stop string cut the text
    reason: str = "length"

    def result(self, decode: Callable[[List[int]], str]) -> GenerationResult:
        return GenerationResult(
            text=self.text if self.text is not None else decode(self.tokens),
            token_ids=self.tokens,
            logprobs=self.logprobs,
            finish_reason=self.reason,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_len,
        )


class Stepper:
    """Picks the next token of each live sequence and says which ones are finished."""

    def __init__(
        self,
        config: GenerationConfig,
        stop_ids: Sequence[int],
        decode: Callable[[List[int]], str],
    ) -> None:
        self.config = config
        self.stop_ids = set(int(i) for i in stop_ids)
        self.decode = decode
        self.generated = 0

    def step(self, logits: torch.Tensor, seqs: Sequence[SequenceState]) -> List[bool]:
        """Advance every sequence by one token; returns, per sequence, whether it is done."""
        cfg = self.config
        raw = logits.float()
        chosen = choose_tokens(
            raw,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            generators=[s.generator for s in seqs] if not cfg.greedy else [],  # type: ignore[misc]
        )
        # Honest log-probabilities: log-softmax of the raw logits, before any warping.
        lp = torch.log_softmax(raw, dim=-1).gather(-1, chosen[:, None])[:, 0]
        done: List[bool] = []
        for seq, tok, logp in zip(seqs, chosen.tolist(), lp.tolist()):
            if tok in self.stop_ids:
                seq.reason = "eos"
                done.append(True)
                continue
            seq.tokens.append(tok)
            seq.logprobs.append(float(logp))
            self.generated += 1
            if cfg.stop:
                text = self.decode(seq.tokens)
                cut = first_stop(text, cfg.stop)
                if cut is not None:
                    seq.text, seq.reason = text[:cut], "stop"
                    done.append(True)
                    continue
            done.append(len(seq.tokens) >= cfg.max_new_tokens)
        return done


def first_stop(text: str, stops: Sequence[str]) -> Optional[int]:
    found = [text.find(s) for s in stops if s]
    found = [f for f in found if f >= 0]
    return min(found) if found else None
