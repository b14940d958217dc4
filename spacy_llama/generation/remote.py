"""The server path of the engine: an OpenAI-compatible model decodes on its server."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import Errors, GenerationError
from ..types import GenerationRequest, GenerationResult
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
    outs: List[GenerationResult] = model.complete([requests[i] for i in todo], config)
    stats.model_calls += len(todo)
    failed: List[str] = []
    for i, out in zip(todo, outs):
        error: Optional[str] = out.error
        if error is not None:
            failed.append(f"{requests[i].label or f'request {i}'}: {error}")
            continue
        on_result(i, out)
        if i in keys:
            writes.add(keys[i], out)
        stats.generated_tokens += len(out.token_ids) or len(out.logprobs)
    writes.flush()
    if failed:
        raise GenerationError(Errors.E404.format(n=len(failed), reasons="; ".join(failed)))
