"""Response-cache keys and I/O: what the engine stores, under which key, and how it reads
it back.

A key hashes everything that decides an answer: the model's fingerprint, every generation
parameter, the stop ids, the quantization, the prompt's token ids (the prompt text for
a server, which tokenizes itself), and a request's own constraint. The stored value is the
model's *raw* answer: echo is
applied on the way out of the engine (:func:`.output.finish`), never stored, so a hit is
echoed exactly once. A value that is not a well-formed result (a truncated write, another
version's format) is a miss, and the new answer replaces it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional, Protocol, Sequence

from ..types import Constraint, GenerationResult


class ResponseCache(Protocol):
    """What the engine needs from a cache (see :mod:`.sqlite_cache`)."""

    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]: ...

    def put_many(self, items: Dict[str, dict]) -> None: ...


def response_key(
    *,
    model_fingerprint: str,
    config_fingerprint: str,
    stop_ids: Sequence[int],
    quantize: Optional[str],
    reduced_precision: bool,
    prompt: Sequence[Any],
    constraint: Optional[Constraint] = None,
    constrained: bool = False,
) -> str:
    """``constraint``: a request's own constraint (the config's is in its fingerprint);
    None leaves the key as it was before constraints existed."""
    h = hashlib.sha256()
    h.update(model_fingerprint.encode())
    h.update(config_fingerprint.encode())
    h.update(",".join(map(str, stop_ids)).encode())
    # "int8" computed per-tensor activation scales before 2026-11-26: old entries differ
    h.update(f"quantize={quantize}/w8a8-row".encode() if quantize else b"")
    # bf16/fp16 decoded with the rotary inv_freq cast to that dtype before 2026-12-01
    h.update(b"rope-fp32" if reduced_precision else b"")
    h.update(b"\0")
    h.update(",".join(map(str, prompt)).encode())
    if constraint is not None:
        h.update(f"\0constraint={constraint.kind}\0{constraint.spec}".encode())
        if constraint.max_string_tokens:
            h.update(f"\0max_string_tokens={constraint.max_string_tokens}".encode())
        if constraint.probes:
            h.update(f"\0probes={constraint.probes!r}\0{constraint.prior_weight!r}".encode())
    # constrained answers closed within the budget and enums decided whole since 2026-12-07
    h.update(b"\0closing+alternatives" if constrained else b"")
    return h.hexdigest()


def lookup(cache: ResponseCache, keys: Sequence[str]) -> Dict[str, GenerationResult]:
    """The well-formed stored answers among ``keys`` (raw: no echo applied)."""
    found: Dict[str, GenerationResult] = {}
    for key, value in cache.get_many(list(keys)).items():
        try:
            found[key] = GenerationResult.from_dict(value, cached=True)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # not a result of ours: a miss
    return found


class PendingWrites:
    """Answers waiting to be stored, written every ``every`` answers and at ``flush``, so an
    interrupted batch keeps what it completed without one write per answer."""

    def __init__(self, cache: Optional[ResponseCache], *, every: int) -> None:
        self.cache = cache
        self.every = max(1, every)
        self.items: Dict[str, dict] = {}

    def add(self, key: str, result: GenerationResult) -> None:
        if self.cache is None:
            return
        self.items[key] = result.to_dict()
        if len(self.items) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None and self.items:
            self.cache.put_many(dict(self.items))
        self.items.clear()
