"""The engine: the only place that knows about batching, caches and devices.

It tokenizes requests, answers what it can from the response cache, and decodes the rest
with continuous batching over the fused decoder (:mod:`.continuous`, :mod:`.decoder`), or
with the portable transformers loop (:mod:`.transformers_loop`) for other architectures.
Results come back in request order whatever order they finished in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence

from ..models.base import LlamaModel
from ..types import (
    AnyRequest,
    AnyResult,
    GenerationRequest,
    GenerationResult,
    PromptTooLongError,
    ScoreRequest,
    TokenLogprobRequest,
)
from .config import GenerationConfig
from .continuous import ContinuousBatcher
from .decoder import (
    FastLlama,
    can_prepack,
    check_int8,
    fused_decoder,
    supports_fast_decoder,
)
from .lookup import DraftStats
from .sampling import make_generators, request_seed
from .stopping import SequenceState, Stepper
from .transformers_loop import decode_all

REDUCED_DTYPES = ("torch.bfloat16", "torch.float16")


class GenerationError(RuntimeError):
    """Some requests of a batch failed (e.g. a server kept refusing them)."""


class ResponseCache(Protocol):
    """What the engine needs from a cache (see :mod:`spacy_llama.cache`)."""

    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]: ...

    def put_many(self, items: Dict[str, dict]) -> None: ...


@dataclass
class EngineStats:
    model_calls: int = 0  # requests that reached the model
    cache_hits: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0


class Engine:
    def __init__(
        self,
        model: LlamaModel,
        config: GenerationConfig,
        *,
        batch_size: int = 16,
        cache: Optional[ResponseCache] = None,
        fast_decoder: bool = True,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        quantize: Optional[str] = None,
    ) -> None:
        self.model = model
        self.config = config
        self.batch_size = max(1, int(batch_size))
        self.cache = cache
        self.stats = EngineStats()
        stop_ids = list(model.stop_token_ids) + list(config.stop_token_ids)
        self._stop_ids = sorted(set(stop_ids))
        self._scorer: Optional[Any] = None
        self.use_fast_decoder = fast_decoder
        self.prefix_cache = prefix_cache
        self.prompt_lookup = prompt_lookup  # greedy only: verify drafts from the prompt
        self.draft_stats = DraftStats()  # how often drafts are kept, across batches
        self._fast: Optional[FastLlama] = None
        self.quantize = quantize  # "int8": quantized projections (changes the numbers)
        if quantize is not None and not supports_fast_decoder(model.model):
            raise ValueError(
                f'quantize = "{quantize}" needs the fused LLaMA decoder, which does not support '
                f"the model at {model.source}. Set quantize = null."
            )
        if quantize is not None:
            check_int8(model.model)  # fail when the pipeline is built, not at the first batch
        # oneDNN prepacking only where this CPU runs it (bf16: models/cpu_features.py),
        # decided when the pipeline is built rather than at the first document
        self.prepack = supports_fast_decoder(model.model) and can_prepack(model.model)
        self.last_prefill_sizes: List[int] = []  # rows per prefill in the last run

    # -- public ----------------------------------------------------------------
    def run_all(self, requests: Sequence[AnyRequest]) -> List[AnyResult]:
        """Dispatch a task's mixed requests: generation here, scoring to the Scorer."""
        results: List[Optional[AnyResult]] = [None] * len(requests)
        kinds: Dict[type, List[int]] = {}
        for i, req in enumerate(requests):
            kinds.setdefault(type(req), []).append(i)
        for kind, idx in kinds.items():
            batch = [requests[i] for i in idx]
            outs: Sequence[AnyResult]
            if kind is GenerationRequest:
                outs = self.run(batch)  # type: ignore[arg-type]
            elif kind is ScoreRequest:
                outs = self.scorer.score(batch)  # type: ignore[arg-type]
            elif kind is TokenLogprobRequest:
                outs = self.scorer.token_logprobs(batch)  # type: ignore[arg-type]
            else:
                raise TypeError(f"Unknown request type {kind.__name__}")
            for i, out in zip(idx, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from .scoring import Scorer

            self._scorer = Scorer(self.model, batch_size=self.batch_size, fast=self.fast)
        return self._scorer

    @property
    def remote(self) -> bool:
        """A model served over HTTP (it has ``complete``) decodes on the server."""
        return callable(getattr(self.model, "complete", None))

    def tokenize(self, request: GenerationRequest) -> List[int]:
        if self.remote:
            return []  # the server tokenizes; the cache keys on the prompt text instead
        return self.model.encode(request.prompt, add_special_tokens=request.add_special_tokens)

    def run(self, requests: Sequence[GenerationRequest]) -> List[GenerationResult]:
        """Complete every request; the i-th result belongs to the i-th request."""
        results: List[Optional[GenerationResult]] = [None] * len(requests)
        ids: List[List[int]] = []
        todo: List[int] = []
        limit = self.model.context_length - self.config.max_new_tokens
        for i, req in enumerate(requests):
            prompt_ids = self.tokenize(req)
            ids.append(prompt_ids)
            if not req.prompt.strip():
                results[i] = GenerationResult(text="", finish_reason="empty")
                continue
            if len(prompt_ids) > limit:
                raise PromptTooLongError(
                    f"The prompt for {req.label or f'request {i}'} has {len(prompt_ids)} tokens, "
                    f"more than the model's context ({self.model.context_length}) minus "
                    f"max_new_tokens ({self.config.max_new_tokens})."
                )
            todo.append(i)
        keys = (
            {i: self.cache_key(ids[i] or [requests[i].prompt]) for i in todo}
            if self.cache is not None
            else {}
        )
        if self.cache is not None and todo:
            hits = self.cache.get_many(list(keys.values()))
            remaining = []
            for i in todo:
                hit = hits.get(keys[i])
                if hit is not None:
                    results[i] = self._with_echo(
                        requests[i], GenerationResult.from_dict(hit, cached=True)
                    )
                    self.stats.cache_hits += 1
                else:
                    remaining.append(i)
            todo = remaining
        self._decode(requests, ids, todo, keys, results)
        return [r if r is not None else GenerationResult(text="") for r in results]

    def cache_key(self, prompt_ids: Sequence[Any]) -> str:
        import hashlib

        h = hashlib.sha256()
        h.update(self.model.fingerprint.encode())
        h.update(self.config.fingerprint().encode())
        h.update(",".join(map(str, self._stop_ids)).encode())
        # "int8" computed per-tensor activation scales before 2026-11-26: old entries differ
        h.update(f"quantize={self.quantize}/w8a8-row".encode() if self.quantize else b"")
        # bf16/fp16 decoded with the rotary inv_freq cast to that dtype before 2026-11-26
        h.update(b"rope-fp32" if str(self.model.dtype) in REDUCED_DTYPES else b"")
        h.update(b"\0")
        h.update(",".join(map(str, prompt_ids)).encode())
        return h.hexdigest()

    # -- decoding ----------------------------------------------------------------
    def _decode(
        self,
        requests: Sequence[GenerationRequest],
        ids: List[List[int]],
        todo: List[int],
        keys: Dict[int, str],
        results: List[Optional[GenerationResult]],
    ) -> None:
        """Decode ``todo``; each result reaches ``results`` (and the cache) as it finishes,
        so an interrupted batch keeps what it completed."""
        if not todo:
            return
        cfg = self.config
        seqs = [
            SequenceState(
                index=i,
                prompt_len=len(ids[i]),
                generator=None
                if cfg.greedy
                else make_generators([request_seed(cfg.seed, ids[i])])[0],
            )
            for i in todo
        ]
        stepper = Stepper(cfg, self._stop_ids, self.model.decode)
        pending: Dict[str, dict] = {}

        def on_done(seq: SequenceState) -> None:
            res = seq.result(self.model.decode)
            results[seq.index] = self._with_echo(requests[seq.index], res)
            if self.cache is not None:
                pending[keys[seq.index]] = res.to_dict()
                if len(pending) >= self.batch_size:
                    self.cache.put_many(dict(pending))
                    pending.clear()

        if self.remote:
            self._complete_remote(requests, todo, keys, results)
            return
        prompts = [ids[i] for i in todo]
        try:
            if self.fast is not None:
                batcher = ContinuousBatcher(
                    self.fast,
                    stepper,
                    batch_size=self.batch_size,
                    max_new_tokens=cfg.max_new_tokens,
                    prefix_cache=self.prefix_cache,
                    prompt_lookup=self.prompt_lookup,
                    draft_stats=self.draft_stats,
                )
                batcher.run(prompts, seqs, on_done)
                self.last_prefill_sizes = batcher.prefill_calls
            else:
                self.last_prefill_sizes = decode_all(
                    self.model.model,
                    prompts,
                    seqs,
                    stepper,
                    batch_size=self.batch_size,
                    pad_id=self.model.pad_token_id,
                    on_done=on_done,
                )
        finally:
            if self.cache is not None and pending:
                self.cache.put_many(pending)
            self.stats.model_calls += len(todo)
            self.stats.prompt_tokens += sum(len(p) for p in prompts)
            self.stats.generated_tokens += stepper.generated

    def _complete_remote(
        self,
        requests: Sequence[GenerationRequest],
        todo: List[int],
        keys: Dict[int, str],
        results: List[Optional[GenerationResult]],
    ) -> None:
        """Send to the server; cache what succeeded, then raise for what did not, so a
        caller (``annotate``) can retry those documents alone and record them as failed."""
        remote: Any = self.model  # an OpenAICompatible model (see models/server.py)
        outs = remote.complete([requests[i] for i in todo], self.config)
        failed = []
        done: Dict[str, dict] = {}
        for i, out in zip(todo, outs):
            if out.error is not None:
                failed.append(f"{requests[i].label or f'request {i}'}: {out.error}")
                continue
            results[i] = self._with_echo(requests[i], out)
            if self.cache is not None:
                done[keys[i]] = out.to_dict()
            self.stats.generated_tokens += len(out.token_ids) or len(out.logprobs)
        self.stats.model_calls += len(todo)
        if self.cache is not None and done:
            self.cache.put_many(done)
        if failed:
            raise GenerationError(f"{len(failed)} request(s) failed: " + "; ".join(failed))

    @property
    def fast(self) -> Optional[FastLlama]:
        """The fused decoder, built on first use when the architecture supports it."""
        if self._fast is None and self.use_fast_decoder and supports_fast_decoder(self.model.model):
            # shared by every engine on this model: one fused (and packed) copy of the weights
            self._fast = fused_decoder(
                self.model.model, prepack=self.prepack, quantize=self.quantize
            )
        return self._fast

    def _with_echo(self, req: GenerationRequest, res: GenerationResult) -> GenerationResult:
        if self.config.echo:
            res.text = req.prompt + res.text
        return res
