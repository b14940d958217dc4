"""The local backend: the model's weights are here, and this process decodes and scores.

Generation runs continuous batching over the fused decoder (:mod:`.continuous`,
:mod:`.decoder`), or the portable transformers loop (:mod:`.transformers_loop`) for other
architectures; constrained rows carry their own grammar matcher (:mod:`.grammar`); scoring
goes to the Scorer (:mod:`.scoring`) on the same fused weights.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import ConstraintError, Errors, ModelLoadError
from ..models.base import LoadedModel
from ..types import Constraint, GenerationRequest, GenerationResult
from .alternatives import Priors
from .closing import minimal_tokens
from .config import GenerationConfig
from .continuous import ContinuousBatcher
from .decode_step import SequenceState, Stepper
from .decoder import FastLlama, can_prepack, check_int8, fused_decoder, supports_fast_decoder
from .grammar import CompiledGrammar, compiler_for, model_vocab_size
from .lookup import DraftStats
from .response_cache import PendingWrites
from .sampling import make_generators, request_seed
from .scoring import Scorer
from .stats import EngineStats
from .transformers_loop import decode_all

REDUCED_DTYPES = ("torch.bfloat16", "torch.float16")


class LocalBackend:
    """Decodes and scores on ``model``'s own weights (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        config: GenerationConfig,
        *,
        stop_ids: List[int],
        batch_size: int,
        fast_decoder: bool = True,
        prefix_cache: bool = True,
        prompt_lookup: bool = True,
        quantize: Optional[str] = None,
    ) -> None:
        self.model = model
        self.config = config
        self.stop_ids = stop_ids
        self.batch_size = batch_size
        self.use_fast_decoder = fast_decoder
        self.prefix_cache = prefix_cache
        self.prompt_lookup = prompt_lookup  # greedy only: verify drafts from the prompt
        self.draft_stats = DraftStats()  # how often drafts are kept, across batches
        self._fast: Optional[FastLlama] = None
        self._scorer: Optional[Scorer] = None
        self.quantize = quantize  # "int8": quantized projections (changes the numbers)
        if quantize is not None and not supports_fast_decoder(model.model):
            raise ModelLoadError(Errors.E402.format(quantize=quantize, source=model.source))
        if quantize is not None:
            check_int8(model.model)  # fail when the pipeline is built, not at the first batch
        # oneDNN prepacking only where this CPU runs it (bf16: models/cpu_features.py),
        # decided when the pipeline is built rather than at the first document
        self.prepack = supports_fast_decoder(model.model) and can_prepack(model.model)
        self.last_prefill_sizes: List[int] = []  # rows per prefill in the last run
        self.last_mask_seconds = 0.0  # grammar masks: time in the last run, and steps
        self.last_mask_steps = 0
        self.last_forced_tokens = 0  # forced tokens verified in one pass (fast-forward)
        self._priors: Mapping[Any, Priors] = {}  # the engine's, for the rows being decoded

    # -- what the engine asks of every backend ------------------------------------------
    answers_scoring = True  # ScoreRequest and TokenLogprobRequest: the logits are here

    @property
    def reduced_precision(self) -> bool:
        """Whether the weights are in bf16/fp16 (the response-cache key records it)."""
        return str(self.model.dtype) in REDUCED_DTYPES

    def prompt_ids(self, request: GenerationRequest) -> List[int]:
        return self.model.encode(request.prompt, add_special_tokens=request.add_special_tokens)

    def check_constraint(self, constraint: Constraint) -> None:
        """The config's constraint compiles, and its shortest output fits (E650)."""
        self.check_budget([constraint])

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

    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.model, batch_size=self.batch_size, fast=self.fast)
        return self._scorer

    def weights_changed(self) -> None:
        """The model's weights were replaced (merged adapters): build the fused decoder and
        the scorer on it again at the next request."""
        self._fast = None
        self._scorer = None

    def decode(
        self,
        requests: Sequence[GenerationRequest],
        ids: List[List[int]],
        todo: List[int],
        *,
        keys: Dict[int, str],
        writes: PendingWrites,
        stats: EngineStats,
        results: List[Optional[GenerationResult]],
        priors: Mapping[Any, Priors],
    ) -> None:
        """Decode ``todo``; each raw result reaches ``results`` (and ``writes``) as it
        finishes, so an interrupted batch keeps what it completed."""
        cfg = self.config
        self._priors = priors
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
            self.stop_ids,
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
            stats.model_calls += len(todo)
            stats.prompt_tokens += sum(len(p) for p in prompts)
            stats.generated_tokens += stepper.generated

    # -- local only ------------------------------------------------------------------------
    def constraint(self, request: GenerationRequest) -> Optional[Constraint]:
        """What ``request``'s completion must match: its own constraint, else the config's."""
        return request.constraint if request.constraint is not None else self.config.constraint

    def grammar(self, constraint: Constraint) -> CompiledGrammar:
        """``constraint`` compiled for this model's tokenizer (cached); ConstraintError if
        it does not compile."""
        tok = self.model.tokenizer
        n_vocab = model_vocab_size(self.model.model, tok)
        return compiler_for(tok, n_vocab, self.stop_ids).compile(constraint)

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

    @property
    def fast(self) -> Optional[FastLlama]:
        """The fused decoder, built on first use when the architecture supports it."""
        if self._fast is None and self.use_fast_decoder and supports_fast_decoder(self.model.model):
            # shared by every engine on this model: one fused (and packed) copy of the weights
            self._fast = fused_decoder(
                self.model.model, prepack=self.prepack, quantize=self.quantize
            )
        return self._fast
