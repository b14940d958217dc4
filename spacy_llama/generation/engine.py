"""The engine: the only place that knows about batching, caches and devices.

It dispatches a task's requests: generation, and scoring to the Scorer (:mod:`.scoring`).
For generation it tokenizes, answers what it can from the response cache
(:mod:`.response_cache`), and has its backend decode the rest. The backend is chosen once,
when the engine is built (:mod:`.backend`): the local one decodes with continuous batching
over the fused decoder (:mod:`.local`), the server one on an OpenAI-compatible server
(:mod:`.remote`). Results come back in request order whatever order they finished in,
are checked where they enter (:mod:`.answers`) and leave through :func:`.output.finish`:
a stored result is never changed.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

from ..errors import Errors, GenerationError, PromptTooLongError, RequestTypeError, Warnings
from ..models.base import LanguageModel
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
from .backend import Backend, choose_backend
from .config import GenerationConfig
from .output import finish
from .response_cache import PendingWrites, ResponseCache, lookup, response_key
from .stats import EngineStats


class OnBackend:
    """An attribute of the engine's backend read (and set) through the engine: the local
    backend's decoder knobs and counters (``engine.fast``, ``engine.prefix_cache``...),
    where callers have always found them. A server backend has none of them."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, engine: Optional[Engine], owner: Any = None) -> Any:
        if engine is None:
            return self
        return getattr(engine.backend, self.name)

    def __set__(self, engine: Engine, value: Any) -> None:
        setattr(engine.backend, self.name, value)


class Engine:
    def __init__(
        self,
        model: LanguageModel,
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
        self._config = config
        self.cache = cache
        self.stats = EngineStats()
        self.quantize = quantize  # "int8": quantized projections (changes the numbers)
        stop_ids = sorted(set(list(model.stop_token_ids) + list(config.stop_token_ids)))
        self.backend: Backend = choose_backend(
            model,
            config,
            stop_ids=stop_ids,
            batch_size=max(1, int(batch_size)),
            fast_decoder=fast_decoder,
            prefix_cache=prefix_cache,
            prompt_lookup=prompt_lookup,
            quantize=quantize,
        )
        self._priors: Dict[Any, Priors] = {}  # content-free probes' priors, per calibration
        # an invalid schema or regex fails when the pipeline is built, not at the first doc
        if config.constraint is not None:
            self.backend.check_constraint(config.constraint)

    batch_size = OnBackend("batch_size")
    _stop_ids = OnBackend("stop_ids")
    # the local backend's knobs and counters (see OnBackend)
    fast = OnBackend("fast")
    _fast = OnBackend("_fast")
    use_fast_decoder = OnBackend("use_fast_decoder")
    prefix_cache = OnBackend("prefix_cache")
    prompt_lookup = OnBackend("prompt_lookup")
    draft_stats = OnBackend("draft_stats")
    prepack = OnBackend("prepack")
    grammar = OnBackend("grammar")
    last_prefill_sizes = OnBackend("last_prefill_sizes")
    last_mask_seconds = OnBackend("last_mask_seconds")
    last_mask_steps = OnBackend("last_mask_steps")
    last_forced_tokens = OnBackend("last_forced_tokens")

    @property
    def config(self) -> GenerationConfig:
        return self._config

    @config.setter
    def config(self, config: GenerationConfig) -> None:
        """A new config reaches the backend too (callers swap it for a warm-up or a sweep)."""
        self._config = config
        self.backend.config = config

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
                raise RequestTypeError(Errors.E051.format(kind=kind.__name__, known=known))
            for i, out in zip(idx, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    @property
    def scorer(self) -> Any:
        """The backend's Scorer (a server backend has none: NotImplementedError E124)."""
        return self.backend.scorer()

    def constraint(self, request: GenerationRequest) -> Optional[Constraint]:
        """What ``request``'s completion must match: its own constraint, else the config's."""
        return request.constraint if request.constraint is not None else self.config.constraint

    @property
    def answers_scoring(self) -> bool:
        """Whether this engine's backend can answer ScoreRequest and TokenLogprobRequest."""
        return self.backend.answers_scoring

    def check_budget(self, constraints: Sequence[Constraint], where: str = "") -> None:
        """ConstraintError (E650) if a constraint's shortest complete output cannot fit in
        max_new_tokens: every answer would fail, so the pipeline is not built (a server
        backend cannot measure it and checks nothing)."""
        self.backend.check_budget(constraints, where)

    def tokenize(self, request: GenerationRequest) -> List[int]:
        """The prompt's token ids ([] on a server: the cache keys on the text instead)."""
        return self.backend.prompt_ids(request)

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
        if todo:
            # every answer is stored as it finishes: a killed run (kill -9 runs no
            # ``finally``) finds at resume every answer it had (one small SQLite
            # transaction per answer)
            writes = PendingWrites(self.cache, every=1)
            if self.backend.answers_scoring:  # calibration scores alternatives: local only
                self._calibrate(requests, todo)
            self.backend.decode(
                requests, ids, todo, keys=keys, writes=writes, stats=self.stats,
                results=results, priors=self._priors,
            )
        return [
            finish(req, res, self.config) if res is not None else GenerationResult(text="")
            for req, res in zip(requests, self._checked(requests, results))
        ]

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
            reduced_precision=self.backend.reduced_precision,
            prompt=prompt,
            constrained=constraint is not None or self.config.constraint is not None,
        )

    def weights_changed(self) -> None:
        """The model's weights were replaced (merged adapters): the backend builds what it
        derived from them (the fused decoder, the scorer) again at the next request."""
        self.backend.weights_changed()
