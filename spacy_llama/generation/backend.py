"""Where an engine's requests are computed, chosen once when the engine is built: the
:class:`~.local.LocalBackend` when the model's weights are here (a ``LoadedModel``), the
:class:`~.remote.ServerBackend` when it is served. The engine calls its backend through
this protocol and never asks which one it has."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Sequence

from ..models.base import has_local_weights
from ..types import Constraint, GenerationRequest, GenerationResult
from .config import GenerationConfig
from .local import LocalBackend
from .remote import ServerBackend
from .response_cache import PendingWrites
from .stats import EngineStats

if TYPE_CHECKING:  # pragma: no cover
    from .alternatives import Priors


class Backend(Protocol):
    stop_ids: List[int]  # the model's and the config's: they end an answer (and key the cache)
    batch_size: int  # requests decoded together (a server's own max_concurrency bounds it)
    config: GenerationConfig  # the engine's, kept in step by ``Engine.config``

    @property
    def answers_scoring(self) -> bool:
        """Whether ScoreRequest and TokenLogprobRequest can be answered (logits are here)."""

    @property
    def reduced_precision(self) -> bool:
        """Whether the answers come from bf16/fp16 weights (the cache key records it)."""

    def prompt_ids(self, request: GenerationRequest) -> List[int]:
        """The prompt's token ids as decoded ([] when the server tokenizes)."""

    def check_constraint(self, constraint: Constraint) -> None:
        """At build time: ConstraintError if the config's constraint cannot be honoured."""

    def check_budget(self, constraints: Sequence[Constraint], where: str = "") -> None:
        """At build time: ConstraintError (E650) if a constraint's shortest output cannot
        fit max_new_tokens, where that can be measured."""

    def scorer(self) -> Any:
        """The Scorer for ScoreRequest and TokenLogprobRequest."""

    def weights_changed(self) -> None:
        """The model's weights were replaced (merged adapters)."""

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
        """Answer ``requests[i]`` for every ``i`` in ``todo`` into ``results[i]``, storing
        each answer whose key is in ``keys`` through ``writes`` as it arrives. ``priors``:
        the content-free priors of calibrated constraints, by (probes, prior_weight)."""


def choose_backend(
    model: Any,
    config: GenerationConfig,
    *,
    stop_ids: List[int],
    batch_size: int,
    fast_decoder: bool = True,
    prefix_cache: bool = True,
    prompt_lookup: bool = True,
    quantize: Optional[str] = None,
) -> Backend:
    """The local backend for a model with its weights here, else the server backend
    (ModelLoadError E965 if ``model`` is not served either)."""
    if has_local_weights(model):
        return LocalBackend(
            model,
            config,
            stop_ids=stop_ids,
            batch_size=batch_size,
            fast_decoder=fast_decoder,
            prefix_cache=prefix_cache,
            prompt_lookup=prompt_lookup,
            quantize=quantize,
        )
    return ServerBackend(model, config, stop_ids=stop_ids, batch_size=batch_size, quantize=quantize)
