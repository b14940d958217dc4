"""The server path of the engine: an OpenAI-compatible model decodes on its server."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import Errors, GenerationError
from ..types import Constraint, GenerationRequest, GenerationResult
from .config import GenerationConfig
from .response_cache import PendingWrites
from .stats import EngineStats


def is_remote(model: Any) -> bool:
    """A model served over HTTP (it has ``complete``) decodes on the server."""
    return callable(getattr(model, "complete", None))


def complete_remote(
    model: Any,
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


def check_remote_constraint(model: Any, constraint: Constraint) -> None:
    """The server can enforce ``constraint`` (ConstraintError naming it if not)."""
    check = getattr(model, "check_constraint", None)
    if check is not None:
        check(constraint)


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
