"""One decode step of every live sequence, shared by both decode loops (continuous batching
and the transformers loop): choose the next token (sampling, grammar masks, closed sets of
alternatives), record it with its log-probability, decide whether the sequence stops (stop
tokens, stop strings, budgets and their closing).

Constrained rows (``SequenceState.grammar``, see ``grammar.py``) choose among the tokens
their grammar allows; unconstrained rows in the same batch are untouched. The reported
``logprobs`` stay the model's own: log-softmax of the raw logits, before the grammar's mask
(and before temperature / top-k / top-p), so a token the grammar forced on an unwilling model
shows as improbable rather than as the certainty it became after masking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import Errors
from ..types import GenerationResult
from .alternatives import Decision, Priors, calibrated, choose, open_alternatives
from .alternatives import record as choice_record
from .closing import closing_tokens
from .config import GenerationConfig
from .grammar import RowGrammar, mask_logits
from .sampling import choose_tokens


@dataclass
class SequenceState:
    """One request being decoded. ``grammar`` (its constraint's matcher) follows the
    sequence wherever its batch slot moves, and is dropped when the sequence finishes."""

    index: int  # position in the engine's request list
    prompt_len: int
    generator: Optional[torch.Generator] = None
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    text: Optional[str] = None  # set when a stop string cut the text
    reason: str = "length"
    grammar: Optional[RowGrammar] = None
    error: Optional[str] = None
    # Budget-aware completion (constrained rows): the most tokens this row may generate
    # (0: max_new_tokens), and the last position known to be closable within it: (tokens
    # then, the closing tokens from there). None: no closing fits, the row runs as before.
    budget: int = 0
    checkpoint: Optional[Tuple[int, List[int]]] = None
    closed: bool = False  # cut by the budget and closed onto its shortest completion
    choices: List[Dict[str, Any]] = field(default_factory=list)  # alternatives.py's decisions
    priors: Priors = field(default_factory=dict)  # alternatives.py's calibration

    def result(self, decode: Callable[[List[int]], str]) -> GenerationResult:
        return GenerationResult(
            text=self.text if self.text is not None else decode(self.tokens),
            token_ids=self.tokens,
            logprobs=self.logprobs,
            finish_reason=self.reason,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_len,
            error=self.error,
            closed=self.closed,
            choices=list(self.choices),
        )


# What a decode loop gives the stepper for a decision (``alternatives.py``): per row of the
# step and its Decision, the log-probabilities of each alternative's scored tokens after the
# first, and a function that keeps the chosen alternative's keys and values in the row's cache.
Scored = Tuple[List[List[float]], Callable[[int], None]]
Scorer = Callable[[int, Decision], Scored]

# Budget checks (``Stepper._budget_closes``): every token once the budget left is within
# CHECK_SLACK of the last closing found, else every CHECK_EVERY tokens.
CHECK_SLACK = 3
CHECK_EVERY = 16


class Stepper:
    """Picks the next token of each live sequence and says which ones are finished."""

    def __init__(
        self,
        config: GenerationConfig,
        stop_ids: Sequence[int],
        decode: Callable[[List[int]], str],
        *,
        n_vocab: int = 0,  # the grammar's vocabulary (mask width); 0: the logits' width
    ) -> None:
        self.config = config
        self.stop_ids = set(int(i) for i in stop_ids)
        self.decode = decode
        self.n_vocab = n_vocab
        self.generated = 0
        self.mask_seconds = 0.0  # time spent filling and applying grammar masks
        self.mask_steps = 0  # steps that had at least one constrained row

    def step(
        self,
        logits: torch.Tensor,
        seqs: Sequence[SequenceState],
        decide: Optional[Scorer] = None,
    ) -> List[bool]:
        """Advance every sequence by one token (or, where ``decide`` is given and a row's
        grammar offers a closed set of whole values, by the chosen value's tokens); returns,
        per sequence, whether it is done."""
        cfg = self.config
        raw = logits.float()
        decisions = self._decisions(seqs) if decide is not None else {}
        prepare = getattr(decide, "prepare", None)
        if decisions and prepare is not None:  # every row's decision in shared passes
            prepare(decisions)
        rest = [k for k in range(len(seqs)) if k not in decisions]
        done = [False] * len(seqs)
        if rest:
            sub = raw if not decisions else raw[rest]
            subseqs = [seqs[k] for k in rest]
            chosen = choose_tokens(
                self._masked(sub, subseqs),
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                generators=[s.generator for s in subseqs] if not cfg.greedy else [],  # type: ignore[misc]
            )
            # Honest log-probabilities: log-softmax of the raw logits, before any mask or warping.
            lp = torch.log_softmax(sub, dim=-1).gather(-1, chosen[:, None])[:, 0]
            for k, tok, logp in zip(rest, chosen.tolist(), lp.tolist()):
                done[k] = self._record(seqs[k], tok, logp)
        for k, decision in decisions.items():
            assert decide is not None
            done[k] = self._decide(seqs[k], decision, raw[k], decide(k, decision))
        for seq, d in zip(seqs, done):
            if d:
                self._close(seq)
        return done

    def _decisions(self, seqs: Sequence[SequenceState]) -> Dict[int, Decision]:
        out: Dict[int, Decision] = {}
        for k, seq in enumerate(seqs):
            if seq.grammar is None or not seq.grammar.alternatives:
                continue
            decision = open_alternatives(seq.grammar, seq.tokens, sorted(self.stop_ids))
            left = (seq.budget or self.config.max_new_tokens) - len(seq.tokens)
            if decision is not None and all(len(r) <= left for r in decision.rests):
                out[k] = decision
        return out

    def _decide(
        self, seq: SequenceState, decision: Decision, raw: torch.Tensor, scored: Scored
    ) -> bool:
        """Take one of ``decision``'s alternatives for ``seq``; whether ``seq`` is done.
        ``raw``: the logits of the row's next token; ``scored``: the log-probabilities of
        each alternative's later tokens, and how to keep the chosen one's keys."""
        later, keep = scored
        first = torch.log_softmax(raw, dim=-1)
        sums = [
            float(first[toks[0]]) + sum(lps)
            for toks, lps in zip(decision.scored, later)
        ]
        sums = calibrated(sums, decision.texts, seq.priors)
        generator = None if self.config.greedy else seq.generator
        i = choose(sums, temperature=self.config.temperature, generator=generator)
        tokens = decision.rests[i]
        start = len(self.decode(seq.tokens)) - decision.written[i]
        seq.choices.append(choice_record(decision, i, sums, start))
        keep(i)
        assert seq.grammar is not None
        seq.grammar.accept_all(tokens)
        seq.tokens.extend(tokens)
        seq.logprobs.extend([float(first[tokens[0]])] + list(later[i][: len(tokens) - 1]))
        self.generated += len(tokens)
        if decision.ends[i] or seq.grammar.terminated:
            seq.reason = "stop"
            return True
        if seq.checkpoint is not None and self._budget_closes(seq):
            return True
        return len(seq.tokens) >= (seq.budget or self.config.max_new_tokens)

    def _masked(self, raw: torch.Tensor, seqs: Sequence[SequenceState]) -> torch.Tensor:
        rows = [k for k, s in enumerate(seqs) if s.grammar is not None]
        if not rows:
            return raw
        t = time.perf_counter()
        grammars = [seqs[k].grammar for k in rows]
        out = mask_logits(raw, rows, grammars, self.n_vocab or raw.shape[-1])  # type: ignore[arg-type]
        self.mask_seconds += time.perf_counter() - t
        self.mask_steps += 1
        return out

    def _record(self, seq: SequenceState, tok: int, logp: float) -> bool:
        """Append ``tok`` to ``seq`` (unless it stops it); whether ``seq`` is done."""
        cfg = self.config
        if tok in self.stop_ids:
            # a constrained row is only offered a stop token once its grammar is complete
            seq.reason = "eos" if seq.grammar is None else "stop"
            return True
        seq.tokens.append(tok)
        seq.logprobs.append(float(logp))
        self.generated += 1
        if seq.grammar is not None:
            seq.grammar.accept(tok)
            if seq.grammar.terminated:  # only a stop token could follow
                seq.reason = "stop"
                return True
            if seq.checkpoint is not None and self._budget_closes(seq):
                return True
        if cfg.stop:
            text = self.decode(seq.tokens)
            cut = first_stop(text, cfg.stop)
            if cut is not None:
                seq.text, seq.reason = text[:cut], "stop"
                self._drop_cut_tokens(seq, cut)
                return True
        return len(seq.tokens) >= (seq.budget or cfg.max_new_tokens)

    def _budget_closes(self, seq: SequenceState) -> bool:
        """Keep a constrained row closable within its budget; whether it was closed now.

        The row's checkpoint is the last position whose closing tokens were found to fit.
        Far from the end the closing is searched every ``CHECK_EVERY`` tokens, near it at
        every token. When the closing from here exactly fills the budget the row takes it;
        when it would not fit, the row goes back to its checkpoint (the tokens since are
        dropped: the row ends anyway) and takes the checkpoint's closing."""
        assert seq.grammar is not None and seq.checkpoint is not None
        n = len(seq.tokens)
        left = (seq.budget or self.config.max_new_tokens) - n
        at, path = seq.checkpoint
        if left - len(path) > CHECK_SLACK and n - at < CHECK_EVERY:
            return False
        here = self._reuse(seq, at, path) or closing_tokens(seq.grammar)
        if here is not None and len(here) <= left:
            seq.checkpoint = (n, here)
            if len(here) < left or not here:
                return False  # room left, or complete already (max_new_tokens ends it)
            self._close_onto(seq, here)
            return True
        seq.grammar.rollback(n - at)
        del seq.tokens[at:], seq.logprobs[at:]
        if seq.choices:  # decisions in the dropped tokens are gone with them
            kept = len(self.decode(seq.tokens))
            seq.choices = [c for c in seq.choices if c["start"] + len(c["text"]) <= kept]
        self._close_onto(seq, path)
        return True

    @staticmethod
    def _reuse(seq: SequenceState, at: int, path: List[int]) -> Optional[List[int]]:
        """The checkpoint's closing, if it still closes from here: its rest when the tokens
        since are its start, else itself (inside a string, the same quote and brackets
        close it); None sends the row to the search. Not always the shortest, always
        complete, and far cheaper than a search at every step near the end."""
        assert seq.grammar is not None
        since = seq.tokens[at:]
        if path and path[: len(since)] == since:
            rest = path[len(since) :]
            if rest and seq.grammar.completes(rest):
                return rest
        if path and seq.grammar.completes(path):
            return list(path)
        return None

    def _close_onto(self, seq: SequenceState, path: List[int]) -> None:
        """Append the closing ``path``: no model pass scores it, so its log-probabilities
        are NaN (unknown), not a certainty the model never gave."""
        assert seq.grammar is not None
        seq.grammar.accept_all(path)
        seq.tokens.extend(path)
        seq.logprobs.extend([float("nan")] * len(path))
        seq.closed = True
        seq.reason = "length"

    def _drop_cut_tokens(self, seq: SequenceState, cut: int) -> None:
        """Drop the trailing tokens whose text lies wholly after the cut (the stop string
        and what followed it): the kept tokens and log-probs are those of the kept text.
        A token that straddles the cut keeps its value (part of its text was kept)."""
        while seq.tokens and len(self.decode(seq.tokens[:-1])) >= cut:
            seq.tokens.pop()
            seq.logprobs.pop()

    def _close(self, seq: SequenceState) -> None:
        """A finished row frees its grammar; cut short by max_new_tokens, it says so."""
        grammar = seq.grammar
        if grammar is None:
            return
        if seq.reason == "length" and not grammar.accepting:
            seq.error = Errors.E426.format(n=self.config.max_new_tokens, kind=grammar.kind)
        seq.grammar = None


def first_stop(text: str, stops: Sequence[str]) -> Optional[int]:
    found = [text.find(s) for s in stops if s]
    found = [f for f in found if f >= 0]
    return min(found) if found else None
