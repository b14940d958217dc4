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

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..types import Constraint, GenerationRequest
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
    # Forced whole tokens go first (one pass, as drafts); forced bytes that no token is
    # forced for (the leading space of " business", " sport") are part of the decision.
    if not row.alternatives or vocab is None or (row.forced_bytes() and row.forced_tokens()):
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
    # the grammar's mask last: most positions (inside a free string, at a key) have already
    # failed the cheap check above, and a mask costs as much as the rest
    allowed = row.allowed_tokens()
    if len(allowed) > MAX_ALLOWED or len(allowed) < 2:
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


def record(decision: Decision, chosen: int, sums: Sequence[float], start: int) -> Dict[str, Any]:
    """What ``GenerationResult.choices`` keeps of a decision (``start``: the character
    offset in the output where the chosen member's text starts)."""
    return {
        "start": start,
        "text": decision.texts[chosen],
        "alternatives": list(decision.texts),
        "probs": normalised(sums),
    }


# -- calibration ------------------------------------------------------------------------------
# Per closed set (its members' texts), each member's weighted content-free log-probability.
Priors = Dict[Tuple[str, ...], Dict[str, float]]


def priors_from(probe_choices: Sequence[Sequence[Dict[str, Any]]], weight: float) -> Priors:
    """The calibration of closed-set decisions from content-free probes: per closed set,
    ``weight`` times each member's mean log-probability over the probes' decisions of that
    set (``record``'s probabilities: a log-softmax, the same shift for every member, so the
    argmax and the draw are those of PMI on the summed log-probabilities)."""
    found: Dict[Tuple[str, ...], List[List[float]]] = {}
    for choices in probe_choices:
        for c in choices:
            probs = [max(float(p), 1e-300) for p in c["probs"]]
            found.setdefault(tuple(c["alternatives"]), []).append([math.log(p) for p in probs])
    out: Priors = {}
    for texts, rows in found.items():
        means = [sum(col) / len(rows) for col in zip(*rows)]
        out[texts] = {t: weight * m for t, m in zip(texts, means)}
    return out


def calibrated(sums: Sequence[float], texts: Sequence[str], priors: Priors) -> List[float]:
    """``sums`` less each member's prior (the probes' decision of the same set, else of a
    set holding every one of ``texts``); unchanged where no probe made such a decision."""
    prior = priors.get(tuple(texts))
    if prior is None:
        prior = next((p for p in priors.values() if all(t in p for t in texts)), None)
    if prior is None:
        return list(sums)
    return [s - prior[t] for s, t in zip(sums, texts)]


def probe_requests(constraint: Constraint, add_special_tokens: bool) -> List[GenerationRequest]:
    """The content-free probes of ``constraint``, as requests (not calibrated themselves)."""
    return [
        GenerationRequest(
            prompt,
            add_special_tokens=add_special_tokens,
            label="content-free probe",
            constraint=Constraint(constraint.kind, spec, constraint.max_string_tokens),
        )
        for prompt, spec in constraint.probes
    ]


# -- scoring every decision of a step together ---------------------------------------------
SCRATCH_BYTES = 256 * 2**20  # the most keys and values one batched pass copies


class StepScorer:
    """The continuous batcher's scorer of closed sets (``continuous.py``): each deciding
    row's keys and values are copied once per alternative into a scratch cache, and every
    alternative's tokens after its first run from there; the chosen one's keys are copied
    back, so the row goes on as if it had decoded them. ``prepare`` (called by the stepper
    with every decision of a step) scores all the step's rows in as few passes as
    ``SCRATCH_BYTES`` allows, not one pass per row: a pass reads every weight once, as a
    whole decode step does. ``extra[k]`` gets how many more tokens row ``k`` has cached."""

    def __init__(
        self,
        fast: Any,
        cache: Any,
        slot_of: Callable[[int], int],
        length_of: Callable[[int], int],
        extra: Dict[int, int],
    ) -> None:
        self.fast, self.cache = fast, cache
        self.slot_of, self.length_of, self.extra = slot_of, length_of, extra
        # per deciding row: the later tokens' log-probabilities, and each alternative's new
        # keys and values (the scratch cache itself goes with its pass)
        self._ready: Dict[int, Tuple[List[List[float]], Any, Any]] = {}

    def prepare(self, decisions: Dict[int, Decision]) -> None:
        fast = self.fast
        per_position = 2 * fast.n_layers * fast.n_kv * fast.head_dim * _element_size(fast)
        group: List[Tuple[int, Decision]] = []
        size = 0
        for k, decision in decisions.items():
            width = max(len(sc) - 1 for sc in decision.scored)
            if not width:
                self._ready[k] = ([[] for _ in decision.scored], None, None)
                continue
            need = len(decision.scored) * (self.length_of(k) + width) * per_position
            if group and size + need > SCRATCH_BYTES:
                self._score(group)
                group, size = [], 0
            group.append((k, decision))
            size += need
        if group:
            self._score(group)

    def _score(self, group: Sequence[Tuple[int, Decision]]) -> None:
        fast, cache = self.fast, self.cache
        feeds = [(k, sc[:-1]) for k, d in group for sc in d.scored]
        width = max(len(f) for _, f in feeds)
        starts = {k: self.length_of(k) for k, _ in group}
        scratch = _scratch(cache, len(feeds), max(starts.values()) + width)
        ids = torch.zeros((len(feeds), width), dtype=torch.long)
        row = 0
        firsts: Dict[int, int] = {}
        for k, decision in group:
            slot, start, n = self.slot_of(k), starts[k], len(decision.scored)
            firsts[k] = row
            scratch.k[:, row : row + n, :, :start] = cache.k[:, slot : slot + 1, :, :start]
            scratch.v[:, row : row + n, :, :start] = cache.v[:, slot : slot + 1, :, :start]
            scratch.k[:, row : row + n, :, start:] = 0  # never read, but never NaN garbage
            scratch.v[:, row : row + n, :, start:] = 0
            for i, sc in enumerate(decision.scored):
                ids[row + i, : len(sc) - 1] = torch.tensor(sc[:-1], dtype=torch.long)
            row += n
        lengths = torch.tensor([starts[k] for k, _ in feeds], dtype=torch.long)
        logits = fast.verify(ids.to(fast.device), lengths, scratch)
        lp = torch.log_softmax(logits.float(), dim=-1)
        for k, decision in group:
            r0, n, start = firsts[k], len(decision.scored), starts[k]
            later = [
                [float(lp[r0 + i, j, sc[j + 1]]) for j in range(len(sc) - 1)]
                for i, sc in enumerate(decision.scored)
            ]
            keys = scratch.k[:, r0 : r0 + n, :, start : start + width].clone()
            values = scratch.v[:, r0 : r0 + n, :, start : start + width].clone()
            self._ready[k] = (later, keys, values)

    def __call__(
        self, k: int, decision: Decision
    ) -> Tuple[List[List[float]], Callable[[int], None]]:
        if k not in self._ready:
            self.prepare({k: decision})
        later, keys, values = self._ready.pop(k)
        slot, start = self.slot_of(k), self.length_of(k)
        cache, extra = self.cache, self.extra

        def keep(i: int) -> None:
            m = len(decision.rests[i]) - 1  # the last one is fed at the next step
            if m and keys is not None:
                cache.k[:, slot, :, start : start + m] = keys[:, i, :, :m]
                cache.v[:, slot, :, start : start + m] = values[:, i, :, :m]
            extra[k] = m

        return later, keep


def _scratch(cache: Any, rows: int, capacity: int) -> Any:
    """A cache like ``cache`` of ``rows`` slots, left uninitialised (the caller fills every
    position): zero-filling a fresh one costs as much as the pass it serves."""
    out = copy.copy(cache)
    shape = (cache.k.shape[0], rows, cache.k.shape[2], capacity, cache.k.shape[4])
    out.k = torch.empty(shape, dtype=cache.k.dtype, device=cache.k.device)
    out.v = torch.empty(shape, dtype=cache.v.dtype, device=cache.v.device)
    out.capacity = capacity
    return out


def _element_size(fast: Any) -> int:
    return int(torch.empty((), dtype=fast.dtype).element_size())
