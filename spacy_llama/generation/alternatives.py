"""Closed sets of alternatives (an ``enum`` field, ``choices``, ``const`` options) decided
as wholes, not token by token.

Token-by-token masking commits to the likeliest first piece: with labels "Books" and
"Electronics" a model that puts a little more mass on "B" than on "E" writes "Books" even
when "Electronics" is the likelier label. Here, at a position where the grammar allows
nothing but a few whole values, every value is scored in one batched pass from the row's
own keys and values (``continuous.py``), the argmax is taken (greedy) or one is drawn from
the normalised distribution with the row's generator (sampled), and the probabilities are
kept with the result (``GenerationResult.choices``) as the decision's confidence.

A position is such a decision when: the constraint lists closed sets (``grammar.
alternative_texts``); at least two members can be written from here (their text, less
what the output already ends with, is accepted by the matcher); and every token the
grammar allows here starts one of them. Only the rest of each member is scored (and the
stop token after a member the grammar could end on but also continue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from .grammar import RowGrammar

MAX_ALLOWED = 2048  # more tokens allowed than this: not a closed set (free text)


@dataclass
class Decision:
    """The alternatives open at one position of one row."""

    texts: List[str]  # each member's full text
    rests: List[List[int]]  # the tokens still to write for each
    scored: List[List[int]]  # what is scored: the rest, plus a stop token where needed
    ends: List[bool]  # whether choosing it ends the output
    written: List[int]  # characters of each member the output already ends with


def open_alternatives(
    row: RowGrammar, emitted: Sequence[int], stop_ids: Sequence[int]
) -> Optional[Decision]:
    """The closed set of whole values the grammar offers at ``row``'s position, or None."""
    vocab = row.vocab
    if not row.alternatives or vocab is None or row.forced_bytes():
        return None
    allowed = row.allowed_tokens()
    if len(allowed) > MAX_ALLOWED or len(allowed) < 2:
        return None
    longest = max(len(t.encode("utf-8")) for t in row.alternatives)
    tail = b"".join(vocab.token_bytes[t] for t in emitted[-longest:])
    texts: List[str] = []
    rests: List[bytes] = []
    tokens: List[List[int]] = []
    written: List[int] = []
    for text in row.alternatives:
        member = text.encode("utf-8")
        for k in range(min(len(member) - 1, len(tail)), -1, -1):
            if not tail.endswith(member[:k]):
                continue
            rest = member[k:]
            ids = vocab.tokenize(rest)
            if ids and row.valid_prefix(ids) == len(ids):
                texts.append(text)
                rests.append(rest)
                tokens.append(ids)
                written.append(len(member[:k].decode("utf-8", errors="replace")))
                break
    if len(texts) < 2:
        return None
    for t in allowed:  # closed: every allowed token begins one of the rests
        piece = vocab.token_bytes[int(t)]
        if not any(r.startswith(piece) or piece.startswith(r) for r in rests):
            return None
    scored, ends = [], []
    for ids in tokens:
        after = row.copy()
        after.accept_all(ids)
        open_end = after.accepting and not after.terminated
        scored.append(ids + [stop_ids[0]] if open_end and stop_ids else list(ids))
        ends.append(after.terminated or open_end)
    return Decision(texts, tokens, scored, ends, written)


def choose(
    sums: Sequence[float], *, temperature: float, generator: Optional[torch.Generator]
) -> int:
    """The argmax (greedy), or a draw from softmax(sums / temperature) with ``generator``."""
    if temperature == 0.0 or generator is None:
        return max(range(len(sums)), key=lambda i: sums[i])
    logits = torch.tensor(list(sums), dtype=torch.float64) / temperature
    probs = torch.softmax(logits, dim=0)
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def normalised(sums: Sequence[float]) -> List[float]:
    """The alternatives' probabilities, summing to one (the model's own, temperature 1)."""
    top = max(sums)
    weights = [math.exp(s - top) for s in sums]
    total = sum(weights)
    return [w / total for w in weights]


def record(
    decision: Decision, chosen: int, sums: Sequence[float], start: int
) -> Dict[str, Any]:
    """What ``GenerationResult.choices`` keeps of a decision (``start``: the character
    offset in the output where the chosen member's text starts)."""
    return {
        "start": start,
        "text": decision.texts[chosen],
        "alternatives": list(decision.texts),
        "probs": normalised(sums),
    }
