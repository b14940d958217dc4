"""The engine: the only place that knows about batching, caches and devices.

It dispatches a task's requests: generation here, scoring to the Scorer (:mod:`.scoring`).
For generation it tokenizes, answers what it can from the response cache
(:mod:`.response_cache`), and decodes the rest with continuous batching over the fused
decoder (:mod:`.continuous`, :mod:`.decoder`), with the portable transformers loop
(:mod:`.transformers_loop`) for other architectures, or on a server (:mod:`.remote`).
Results come back in request order whatever order they finished in, and leave through
:func:`.output.finish`: a stored result is never changed.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConstraintError, Errors, GenerationError, PromptTooLongError, Warnings
from ..models.base import LoadedModel
from ..types import (
    AnyRequest,
    AnyResult,
    Constraint,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    TokenLogprobRequest,
)
from .alternatives import Priors, priors_from, probe_requests
from .answers import check_answer
from .closing import minimal_tokens
from .config import GenerationConfig
from .continuous import ContinuousBatcher
from .decoder import (
    FastLlama,
    can_prepack,
    check_int8,
    fused_decoder,
    supports_fast_decoder,
)
from .grammar import CompiledGrammar, compiler_for, model_vocab_size
from .lookup import DraftStats
from .output import finish
from .remote import check_remote_constraint, complete_remote, is_remote
from .response_cache import PendingWrites, ResponseCache, lookup, response_key
from .sampling import make_generators, request_seed
from .stats import EngineStats
from .stopping import SequenceState, Stepper
from .transformers_loop import decode_all

REDUCED_DTYPES = ("torch.bfloat16", "torch.float16")


class Engine:
    def __init__(
        self,
        model: LoadedModel,
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
            raise ValueError(Errors.E402.format(quantize=quantize, source=model.source))
        if quantize is not None:
            check_int8(model.model)  # fail when the pipeline is built, not at the first batch
        # oneDNN prepacking only where this CPU runs it (bf16: models/cpu_features.py),
        # decided when the pipeline is built rather than at the first document
        self.prepack = (
            not is_remote(model) and supports_fast_decoder(model.model) and can_prepack(model.model)
        )
        self.last_prefill_sizes: List[int] = []  # rows per prefill in the last run
        self.last_mask_seconds = 0.0  # grammar masks: time in the last run, and steps
        self.last_mask_steps = 0
        self.last_forced_tokens = 0  # forced tokens verified in one pass (fast-forward)
        self._priors: Dict[Any, Priors] = {}  # content-free probes' priors, per calibration
        # an invalid schema or regex fails when the pipeline is built, not at the first doc
        if config.constraint is not None:
            if self.remote:
                check_remote_constraint(model, config.constraint)
            else:
                self.check_budget([config.constraint])

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
                scored = self.scorer.score(batch)  # type: ignore[arg-type]
                self.stats.model_calls += len(batch)
                self.stats.scored_tokens += sum(sum(r.n_tokens) for r in scored)
                outs = scored
            elif kind is TokenLogprobRequest:
                read = self.scorer.token_logprobs(batch)  # type: ignore[arg-type]
                self.stats.model_calls += len(batch)
                self.stats.scored_tokens += sum(len(r.token_ids) for r in read)
                outs = read
            else:
                known = "GenerationRequest, ScoreRequest, TokenLogprobRequest"
                raise TypeError(Errors.E051.format(kind=kind.__name__, known=known))
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
        """A model served over HTTP decodes on the server."""
        return is_remote(self.model)

    def constraint(self, request: GenerationRequest) -> Optional[Constraint]:
        """What ``request``'s completion must match: its own constraint, else the config's."""
        return request.constraint if request.constraint is not None else self.config.constraint

    def grammar(self, constraint: Constraint) -> CompiledGrammar:
        """``constraint`` compiled for this model's tokenizer (cached); ConstraintError if
        it does not compile."""
        tok = self.model.tokenizer
        n_vocab = model_vocab_size(self.model.model, tok)
        return compiler_for(tok, n_vocab, self._stop_ids).compile(constraint)

    def check_budget(self, constraints: Sequence[Constraint], where: str = "") -> None:
        """ConstraintError (E650) if a constraint's shortest complete output cannot fit in
        max_new_tokens: every answer would fail, so the pipeline is not built."""
        for constraint in constraints:
            closing = minimal_tokens(self.grammar(constraint))
            if closing is not None and len(closing) > self.config.max_new_tokens:
                text = self.model.decode(closing)
                raise ConstraintError(
                    Errors.E650.format(
                        kind=constraint.kind,
                        where=where,
                        max_new=self.config.max_new_tokens,
                        n=len(closing),
                        text=text if len(text) <= 120 else text[:117] + "...",
                    )
                )

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
                    Errors.E403.format(
                        label=req.label or f"request {i}",
                        n=len(prompt_ids),
                        context=self.model.context_length,
                        max_new=self.config.max_new_tokens,
                    )
                )
            todo.append(i)
        keys = (
            {
                i: self.cache_key(ids[i] or [requests[i].prompt], requests[i].constraint)
                for i in todo
            }
            if self.cache is not None
            else {}
        )
        if self.cache is not None and todo:
            hits = lookup(self.cache, [keys[i] for i in todo])
            remaining = []
            for i in todo:
                hit = hits.get(keys[i])
                if hit is not None:
                    results[i] = hit
                    self.stats.cache_hits += 1
                else:
                    remaining.append(i)
            todo = remaining
        self._decode(requests, ids, todo, keys, results)
        return [
            finish(req, res, self.config) if res is not None else GenerationResult(text="")
            for req, res in zip(requests, self._checked(requests, results))
        ]

    def _checked(
        self, requests: Sequence[GenerationRequest], results: List[Optional[GenerationResult]]
    ) -> List[Optional[GenerationResult]]:
        """Every answer checked where it enters (``answers.py``), whether the model, the
        server or the cache gave it: repaired values are counted (and warned of once), an
        answer that cannot be trusted fails its request."""
        out: List[Optional[GenerationResult]] = []
        refused: List[str] = []
        repaired = 0
        for i, res in enumerate(results):
            if res is not None:
                res, fixed, problem = check_answer(res, max_new_tokens=self.config.max_new_tokens)
                repaired += fixed > 0
                if problem is not None:
                    refused.append(f"{requests[i].label or f'request {i}'}: {problem}")
            out.append(res)
        if repaired:
            self.stats.repaired_answers += repaired
            warnings.warn(f"[spacy-llama] {Warnings.W601}", stacklevel=3)
        if refused:
            raise GenerationError(Errors.E404.format(n=len(refused), reasons="; ".join(refused)))
        return out

    def cache_key(self, prompt: Sequence[Any], constraint: Optional[Constraint] = None) -> str:
        """The response-cache key of a prompt (token ids, or the text for a server) and of a
        request's own constraint (the config's is in its fingerprint)."""
        return response_key(
            constraint=constraint,
            model_fingerprint=self.model.fingerprint,
            config_fingerprint=self.config.fingerprint(),
            stop_ids=self._stop_ids,
            quantize=self.quantize,
            reduced_precision=str(self.model.dtype) in REDUCED_DTYPES,
            prompt=prompt,
            constrained=constraint is not None or self.config.constraint is not None,
        )

    # -- decoding ----------------------------------------------------------------
    def _decode(
        self,
        requests: Sequence[GenerationRequest],
        ids: List[List[int]],
        todo: List[int],
        keys: Dict[int, str],
        results: List[Optional[GenerationResult]],
    ) -> None:
        """Decode ``todo``; each raw result reaches ``results`` (and the cache) as it
        finishes, so an interrupted batch keeps what it completed."""
        if not todo:
            return
        # every answer is stored as it finishes: a killed run (kill -9 runs no ``finally``)
        # finds at resume every answer it had (one small SQLite transaction per answer)
        writes = PendingWrites(self.cache, every=1)
        if self.remote:

            def store(i: int, res: GenerationResult) -> None:
                results[i] = res

            complete_remote(
                self.model,
                self.config,
                requests,
                todo,
                keys=keys,
                writes=writes,
                stats=self.stats,
                on_result=store,
            )
            return
        cfg = self.config
        self._calibrate(requests, todo)
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
        for seq in seqs:
            self._start_grammar(seq, requests[seq.index])
        stepper = Stepper(
            cfg,
            self._stop_ids,
            self.model.decode,
            n_vocab=model_vocab_size(self.model.model, self.model.tokenizer),
        )

        def on_done(seq: SequenceState) -> None:
            res = seq.result(self.model.decode)
            results[seq.index] = res
            if seq.index in keys:
                writes.add(keys[seq.index], res)

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
                self.last_forced_tokens = batcher.forced_fed
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
            writes.flush()
            self.last_mask_seconds = stepper.mask_seconds
            self.last_mask_steps = stepper.mask_steps
            self.stats.model_calls += len(todo)
            self.stats.prompt_tokens += sum(len(p) for p in prompts)
            self.stats.generated_tokens += stepper.generated

    def _start_grammar(self, seq: SequenceState, request: GenerationRequest) -> None:
        """A constrained row gets its matcher, its token budget, and the closing from the
        start as its first checkpoint when that fits (``Stepper._budget_closes``)."""
        constraint = self.constraint(request)
        if constraint is None:
            return
        compiled = self.grammar(constraint)
        seq.grammar = compiled.start()
        seq.grammar.string_cap = constraint.max_string_tokens
        seq.priors = self._priors.get((constraint.probes, constraint.prior_weight), {})
        seq.budget = min(self.config.max_new_tokens, self.model.context_length - seq.prompt_len)
        closing = minimal_tokens(compiled)
        if closing is not None and len(closing) <= seq.budget:
            seq.checkpoint = (0, closing)

    def _calibrate(self, requests: Sequence[GenerationRequest], todo: Sequence[int]) -> None:
        """Decode the content-free probes of every constraint that asks for calibration,
        once per engine, before its rows (``alternatives.priors_from``)."""
        for i in todo:
            c = self.constraint(requests[i])
            if c is not None and c.probes and (c.probes, c.prior_weight) not in self._priors:
                out = self.run(probe_requests(c, requests[i].add_special_tokens))
                self._priors[(c.probes, c.prior_weight)] = priors_from(
                    [r.choices for r in out], c.prior_weight
                )

    def weights_changed(self) -> None:
        """The model's weights were replaced (merged adapters): build the fused decoder and
        the scorer on it again at the next request."""
        self._fast = None
        self._scorer = None

    @property
    def fast(self) -> Optional[FastLlama]:
        """The fused decoder, built on first use when the architecture supports it."""
        if self._fast is None and self.use_fast_decoder and supports_fast_decoder(self.model.model):
            # shared by every engine on this model: one fused (and packed) copy of the weights
            self._fast = fused_decoder(
                self.model.model, prepack=self.prepack, quantize=self.quantize
            )
        return self._fast
