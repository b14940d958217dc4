"""Batched log-likelihoods: candidate continuations of a prompt, and every token of a text.

Scoring (:meth:`Scorer.score`): each prompt+candidate is tokenised as one string and the
candidate's tokens are found by character offsets, so a tokenizer that merges across the
boundary is handled. The token prefix shared by all candidates of a request is run once
(KV cache kept), the cache is repeated per candidate, and only the short continuations run
again (right padded). Log-softmax is taken in float32. LLaMA models run on the engine's
fused decoder (``FastLlama``: slot KV cache, prepacked GEMMs, a ``verify`` pass for the
candidates); any other causal LM (or a model spread over devices) through its
transformers forward pass (``rows.forward_after``, the pass the training losses share).

Token log-probabilities (:meth:`Scorer.token_logprobs`): texts longer than the window are cut
into overlapping windows; every token is scored once, with at least ``window - stride`` tokens
of left context. Logits are computed only for the positions needed, in slices, because a full
``(tokens x vocabulary)`` matrix does not fit in memory for long texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from ..errors import CandidateError, Errors, PromptTooLongError
from ..models.base import LoadedModel
from ..types import (
    ScoreRequest,
    ScoreResult,
    TokenLogprobRequest,
    TokenLogprobResult,
)
from .decoder import FastLlama, KVCache
from .rows import Past, common_prefix, forward_after, group_by_sum, pad_right, prefix_runs

Offsets = List[Tuple[int, int]]
HEAD_SLICE = 512  # positions per lm_head call in token_logprobs (bounds memory)


@dataclass
class PreparedScore:
    """One ScoreRequest as token ids: the prefix its candidates share, then one continuation
    per candidate (the tokens the engine scores, and the training losses teacher-force)."""

    prefix: List[int]
    conts: List[List[int]]
    first: List[int]  # index in each continuation of the candidate's first token


@dataclass
class _Window:
    request: int
    begin: int
    end: int
    score_from: int  # tokens [score_from, end) are scored in this window


class Scorer:
    def __init__(
        self,
        model: LoadedModel,
        *,
        batch_size: int,
        window: Optional[int] = None,
        stride: Optional[int] = None,
        fast: Optional[FastLlama] = None,
    ) -> None:
        self.model = model
        self.fast = fast  # the fused decoder, when the engine has one for this model
        self.batch_size = max(1, int(batch_size))
        self.window = max(2, min(int(window or model.context_length), model.context_length))
        self.stride = max(1, min(int(stride or self.window // 2), self.window - 1))

    # -- candidate scoring -------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> List[ScoreResult]:
        """Summed and mean log-probability of every candidate; results in input order."""
        prepared = [self.prepare(i, req) for i, req in enumerate(requests)]
        results: List[ScoreResult] = [ScoreResult([], [], []) for _ in requests]
        # Sorted by token ids, requests that share a prompt prefix (the entities of one doc,
        # the few-shot block of a task) are neighbours; each group runs its prefix once.
        todo = sorted(
            (i for i, p in enumerate(prepared) if p.conts), key=lambda i: prepared[i].prefix
        )
        for run in prefix_runs([prepared[i].prefix for i in todo]):
            members = [todo[k] for k in run]
            shared = min(
                common_prefix([prepared[i].prefix for i in members]),
                min(len(prepared[i].prefix) for i in members) - 1,  # each keeps a token to run
            )
            run_shared: Callable[[List[int]], Any] = self._shared_past
            score_chunk: Callable[..., List[List[List[float]]]] = self._score_chunk
            if self.fast is not None:
                run_shared, score_chunk = self._fast_shared, self._score_chunk_fast
            base = run_shared(prepared[members[0]].prefix[:shared]) if shared > 0 else None
            for chunk in self._chunks(members, prepared):
                items = [prepared[i] for i in chunk]
                for i, lps in zip(chunk, score_chunk(items, base, max(shared, 0))):
                    results[i] = ScoreResult(
                        sums=[float(sum(x)) for x in lps],
                        means=[float(sum(x) / len(x)) for x in lps],
                        n_tokens=[len(x) for x in lps],
                    )
        return results

    def _chunks(self, order: List[int], prepared: List[PreparedScore]) -> List[List[int]]:
        """Groups of requests with at most ``batch_size`` candidate rows (at least one request)."""
        sizes = [len(prepared[i].conts) for i in order]
        return [[order[k] for k in group] for group in group_by_sum(sizes, self.batch_size)]

    def prepare(self, i: int, req: ScoreRequest) -> PreparedScore:
        """``req`` (request ``i``, for messages) as the token ids the engine scores: the
        prefix its candidates share and each candidate's continuation. Raises a coded error
        for an empty candidate, a row longer than the context or a candidate that swallows
        the prompt."""
        name = req.label or f"request {i}"
        if not req.candidates:
            return PreparedScore(prefix=[], conts=[], first=[])
        if any(not c for c in req.candidates):
            raise CandidateError(Errors.E405.format(name=name))
        rows: List[List[int]] = []
        starts: List[int] = []
        for cand in req.candidates:
            ids, start = self._encode_candidate(req, cand, name)
            if len(ids) > self.model.context_length:
                raise PromptTooLongError(
                    Errors.E406.format(
                        cand=cand, name=name, n=len(ids), context=self.model.context_length
                    )
                )
            rows.append(ids)
            starts.append(start)
        shared = min(common_prefix(rows), min(starts))
        if shared < 1:
            raise CandidateError(Errors.E407.format(name=name))
        return PreparedScore(
            prefix=rows[0][:shared],
            conts=[row[shared:] for row in rows],
            first=[s - shared for s in starts],
        )

    def _encode_candidate(self, req: ScoreRequest, cand: str, name: str) -> Tuple[List[int], int]:
        """Token ids of prompt+candidate (cut after the candidate) and its first token index."""
        tok = self.model.tokenizer
        if getattr(tok, "is_fast", False):
            enc = tok(
                req.prompt + cand,
                add_special_tokens=req.add_special_tokens,
                return_offsets_mapping=True,
            )
            ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
            # A token belongs to the candidate if it ends after the prompt: a token straddling
            # the boundary is scored with the candidate. Added specials ((0, 0)) never are.
            mine = [j for j, (_, end) in enumerate(offsets) if end > len(req.prompt)]
            if not mine:
                raise CandidateError(Errors.E408.format(cand=cand, name=name))
            start, stop = mine[0], mine[-1] + 1
            ids = ids[:stop]
        else:  # slow tokenizers have no offsets: assume the tokenizations concatenate
            head = self.model.encode(req.prompt, add_special_tokens=req.add_special_tokens)
            ids = head + self.model.encode(cand, add_special_tokens=False)
            start = len(head)
        if start == 0:
            raise CandidateError(Errors.E409.format(cand=cand, name=name))
        return ids, start

    def _fast_shared(self, ids: List[int]) -> KVCache:
        assert self.fast is not None
        cache = self.fast.new_cache(1, len(ids))
        self.fast.prefix(ids, cache, 0)
        return cache

    @torch.inference_mode()
    def _score_chunk_fast(
        self, items: List[PreparedScore], base: Optional[KVCache], shared: int
    ) -> List[List[List[float]]]:
        """As :meth:`_score_chunk`, on the fused decoder: the rest of each request's prefix
        is prefilled into one slot per request, the slots are repeated per candidate, and one
        ``verify`` pass returns the logits of every candidate position."""
        fast = self.fast
        assert fast is not None
        device = fast.device
        n = len(items)
        rests = [it.prefix[shared:] for it in items]
        conts = [c for it in items for c in it.conts]
        owner = [b for b, it in enumerate(items) for _ in it.conts]
        width = max(len(c) for c in conts)
        cache = fast.new_cache(n, shared + max(len(r) for r in rests) + width + 1)
        if base is not None:
            cache.k[:, :, :, :shared] = base.k[:, 0:1]
            cache.v[:, :, :, :shared] = base.v[:, 0:1]
        ids, _ = pad_right(rests)
        lengths = torch.tensor([len(r) for r in rests])
        slots = torch.arange(n)
        last = torch.log_softmax(
            fast.prefill(ids.to(device), lengths, cache, slots, start=shared).float(), -1
        )
        idx = torch.tensor(owner, device=device)
        cache.k, cache.v = cache.k.index_select(1, idx), cache.v.index_select(1, idx)
        cids, _ = pad_right(conts)
        logits = fast.verify(cids.to(device), shared + lengths[owner], cache)
        return _candidate_logprobs(items, last, torch.log_softmax(logits.float(), dim=-1))

    @torch.inference_mode()
    def _shared_past(self, ids: List[int]) -> Past:
        """The KV cache of a prefix shared by a group of requests (one row)."""
        body = _decoder(self.model.model)
        pad = self.model.pad_token_id
        past = forward_after(body, [ids], None, device=self.model.device, pad_id=pad)[1]
        assert past is not None
        return past

    @torch.inference_mode()
    def _score_chunk(
        self, items: List[PreparedScore], base: Optional[Past], shared: int
    ) -> List[List[List[float]]]:
        """Per request, per candidate: the log-probability of each candidate token.

        Three steps share one KV cache: the group's common prefix (``base``, ``shared``
        tokens), the rest of each request's prefix (right padded), then every candidate.
        """
        lm, device, pad = self.model.model, self.model.device, self.model.pad_token_id
        n = len(items)
        past = base.select([0] * n) if base is not None else None
        rests = [it.prefix[shared:] for it in items]
        out, past = forward_after(_decoder(lm), rests, past, device=device, pad_id=pad)
        assert past is not None
        ends = torch.tensor([len(r) - 1 for r in rests], device=device)
        head = lm.get_output_embeddings()
        hidden = out.last_hidden_state[torch.arange(n, device=device), ends]
        last = torch.log_softmax(head(hidden).float(), -1)
        owner = [b for b, it in enumerate(items) for _ in it.conts]
        conts = [c for it in items for c in it.conts]
        # one copy of the cache per candidate; the full LM gives the candidates' logits
        out, _ = forward_after(lm, conts, past.select(owner), device=device, pad_id=pad)
        return _candidate_logprobs(items, last, torch.log_softmax(out.logits.float(), dim=-1))

    # -- token log-probabilities ----------------------------------------------------------
    def token_logprobs(self, requests: Sequence[TokenLogprobRequest]) -> List[TokenLogprobResult]:
        """The log-probability of every token of each text (None for the first token)."""
        encoded = [self._encode_text(req) for req in requests]
        logprobs: List[List[Optional[float]]] = [[None] * len(ids) for ids, _ in encoded]
        windows = [
            w
            for i, ((ids, _), req) in enumerate(zip(encoded, requests))
            for w in self._windows(i, len(ids), window=req.window, stride=req.stride)
        ]
        windows.sort(key=lambda w: -(w.end - w.begin))
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            rows = [encoded[w.request][0][w.begin : w.end] for w in chunk]
            for w, values in zip(chunk, self._window_logprobs(rows, chunk)):
                logprobs[w.request][w.score_from : w.end] = values
        for lps, req in zip(logprobs, requests):
            lps[: len(req.prefix_ids)] = [None] * len(req.prefix_ids)  # context, not text
        return [
            TokenLogprobResult(token_ids=ids, offsets=offsets, logprobs=lps)
            for (ids, offsets), lps in zip(encoded, logprobs)
        ]

    def _encode_text(self, req: TokenLogprobRequest) -> Tuple[List[int], Offsets]:
        # a document's text is text: "</s>" in it is scored as characters, not as EOS
        enc = self.model.tokenizer(
            req.text,
            add_special_tokens=req.add_special_tokens,
            return_offsets_mapping=True,
            split_special_tokens=True,
        )
        prefix = list(req.prefix_ids)
        offsets = [(0, 0)] * len(prefix) + [tuple(o) for o in enc["offset_mapping"]]
        return prefix + list(enc["input_ids"]), offsets  # type: ignore[return-value]

    def _windows(
        self,
        request: int,
        n: int,
        *,
        window: Optional[int] = None,
        stride: Optional[int] = None,
    ) -> List[_Window]:
        """Overlapping windows; each scores the tokens after the previous window's end.
        ``window``/``stride`` (a request's own) override the Scorer's, within the context."""
        if n < 2:
            return []
        size = self.window if window is None else max(2, min(window, self.model.context_length))
        step = (size // 2 if window is not None else self.stride) if stride is None else stride
        step = max(1, min(step, size - 1))
        out: List[_Window] = []
        begin, prev_end = 0, 1
        while True:
            end = min(begin + size, n)
            out.append(_Window(request, begin, end, max(prev_end, begin + 1)))
            if end == n:
                return out
            prev_end = end
            begin += step

    @torch.inference_mode()
    def _window_logprobs(
        self, rows: List[List[int]], windows: List[_Window]
    ) -> List[List[Optional[float]]]:
        lm, device = self.model.model, self.model.device
        ids = pad_right(rows, self.model.pad_token_id)[0].to(device)
        head: Any
        if self.fast is not None:
            hidden = self.fast.hidden_states(ids, torch.tensor([len(r) for r in rows]))
            head = self.fast.lm_head
        else:
            body, pad = _decoder(lm), self.model.pad_token_id
            states, _ = forward_after(body, rows, None, device=device, pad_id=pad, keep=False)
            hidden = states.last_hidden_state
            head = lm.get_output_embeddings()
        out: List[List[Optional[float]]] = []
        for r, (row, w) in enumerate(zip(rows, windows)):
            values: List[Optional[float]] = []
            # Token k of the window is predicted by position k-1.
            for a in range(w.score_from - w.begin, len(row), HEAD_SLICE):
                b = min(a + HEAD_SLICE, len(row))
                logp = torch.log_softmax(head(hidden[r, a - 1 : b - 1]).float(), dim=-1)
                target = ids[r, a:b, None]
                values.extend(float(x) for x in logp.gather(-1, target)[:, 0].tolist())
            out.append(values)
        return out


def _candidate_logprobs(
    items: List[PreparedScore], last: torch.Tensor, clog: torch.Tensor
) -> List[List[List[float]]]:
    """Per request, per candidate, the log-probability of each candidate token: ``last``
    holds each request's prefix-end log-probs, ``clog`` (candidate rows in request order,
    positions) those of the continuation passes."""
    grouped: List[List[List[float]]] = []
    r = 0
    for b, it in enumerate(items):
        per_cand = []
        for cont, first in zip(it.conts, it.first):
            # Token j of the continuation is predicted by position j-1 (the prefix's last for 0).
            dists = [last[b] if j == 0 else clog[r, j - 1] for j in range(first, len(cont))]
            per_cand.append([float(d[cont[j]]) for d, j in zip(dists, range(first, len(cont)))])
            r += 1
        grouped.append(per_cand)
    return grouped


def _decoder(lm: Any) -> Any:
    """The transformer body (hidden states before the LM head) of a causal LM."""
    get = getattr(lm, "get_decoder", None)
    body = get() if get is not None else None
    if body is None:
        raise TypeError(f"{type(lm).__name__} does not expose its decoder (get_decoder()).")
    return body
