"""The server backend: the model decodes on an OpenAI-compatible server
(``models/server``); this process renders prompts, caches answers and checks them.

A served model has no weights here, so nothing is scored (``answers_scoring`` is false:
a pipeline whose task scores fails when it is built, E050) and a constraint's budget
cannot be measured (the server runs its own grammar); the server is asked whether it can
enforce a constraint instead.
"""

from __future__ import annotations

import dataclasses
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
)

from ..errors import Errors, GenerationError, ModelLoadError, NoWeightsError
from ..types import Constraint, GenerationRequest, GenerationResult
from .config import GenerationConfig
from .response_cache import PendingWrites
from .stats import EngineStats

if TYPE_CHECKING:  # pragma: no cover
    from .alternatives import Priors


class ServedModel(Protocol):
    """What the server backend needs of a model: it completes requests elsewhere
    (``models/server/model.py``'s ServerModel; a test's stand-in)."""

    source: str

    def complete(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> List[GenerationResult]: ...


class ServerBackend:
    """Sends generation requests to the model's server (see the module docstring)."""

    answers_scoring = False  # a server returns text, not the logits scoring needs
    reduced_precision = False  # the cache keys on the served model's name, not a dtype

    def __init__(
        self,
        model: Any,
        config: GenerationConfig,
        *,
        stop_ids: List[int],
        batch_size: int = 16,
        quantize: Optional[str] = None,
    ) -> None:
        if not callable(getattr(model, "complete", None)):
            raise ModelLoadError(Errors.E965.format(kind=type(model).__name__))
        if quantize is not None:  # quantized projections belong to the local fused decoder
            raise ModelLoadError(Errors.E402.format(quantize=quantize, source=model.source))
        self.model: ServedModel = model
        self.config = config
        self.stop_ids = stop_ids
        self.batch_size = batch_size  # sent together; the model's max_concurrency in flight

    def prompt_ids(self, request: GenerationRequest) -> List[int]:
        return []  # the server tokenizes; the cache keys on the prompt text instead

    def check_constraint(self, constraint: Constraint) -> None:
        """The server can enforce ``constraint`` (ConstraintError naming it if not)."""
        check = getattr(self.model, "check_constraint", None)  # a stand-in may not check
        if check is not None:
            check(constraint)

    def check_budget(self, constraints: Sequence[Constraint], where: str = "") -> None:
        """Nothing to measure here: the server runs the grammar, and an answer it cuts at
        max_new_tokens is an error (:func:`length_error`)."""

    def scorer(self) -> Any:
        raise NoWeightsError(Errors.E124.format(source=self.model.source))

    def weights_changed(self) -> None:
        """No weights here: nothing to rebuild."""

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
        priors: Mapping[Any, Priors],  # never filled: a server answers no scoring
    ) -> None:
        def store(i: int, res: GenerationResult) -> None:
            results[i] = res

        complete_remote(
            self.model,
            self.config,
            requests,
            todo,
            keys=keys,
            writes=writes,
            stats=stats,
            on_result=store,
        )


def complete_remote(
    model: ServedModel,
    config: GenerationConfig,
    requests: Sequence[GenerationRequest],
    todo: List[int],
    *,
    keys: Dict[int, str],
    writes: PendingWrites,
    stats: EngineStats,
    on_result: Callable[[int, GenerationResult], None],
) -> None:
    """Send ``todo`` to the server; hand over and cache what succeeded, then raise for what
    did not, so a caller (``annotate``) can retry those documents alone and record them as
    failed."""
    sent = [with_constraint(requests[i], config.constraint) for i in todo]
    outs: List[GenerationResult] = model.complete(sent, config)
    stats.model_calls += len(todo)
    failed: List[str] = []
    for i, req, out in zip(todo, sent, outs):
        error: Optional[str] = out.error
        if error is not None:
            failed.append(f"{requests[i].label or f'request {i}'}: {error}")
            continue
        out = length_error(out, req.constraint, config.max_new_tokens)
        on_result(i, out)
        if i in keys:
            writes.add(keys[i], out)
        stats.generated_tokens += len(out.token_ids) or len(out.logprobs)
    writes.flush()
    if failed:
        raise GenerationError(Errors.E404.format(n=len(failed), reasons="; ".join(failed)))


def with_constraint(request: GenerationRequest, default: Optional[Constraint]) -> GenerationRequest:
    """The request as sent: its own constraint, else the config's."""
    if request.constraint is not None or default is None:
        return request
    return dataclasses.replace(request, constraint=default)


def length_error(
    out: GenerationResult, constraint: Optional[Constraint], max_new_tokens: int
) -> GenerationResult:
    """A constrained answer the server cut at max_new_tokens is incomplete: say so, as the
    local engine does (the server does not say whether its grammar was complete)."""
    if constraint is None or out.finish_reason != "length" or out.error is not None:
        return out
    error = Errors.E426.format(n=max_new_tokens, kind=constraint.kind)
    return dataclasses.replace(out, error=error)
