"""Frozen features computed once per span: reused across epochs and dev evaluations.

With ``freeze = true`` a span's hidden states depend only on its piece ids (its text as the
tokenizer reads it), the model's weights and the layer: ``batching.py`` makes them the same
whatever batch, padding or order they come in. So the states of a span already seen are
taken from here instead of running the LLaMA again; ``spacy train`` over 15 epochs then runs
the model over each training doc once, and each dev evaluation over the dev docs once.

The key is (the model's fingerprint, the layer, the piece ids). The cache lives in memory on
the feature model, least recently used first out, within ``SPACY_LLAMA_FEATURE_CACHE_MB``
megabytes (default 1024; 0 turns it off). A trained adapter (``freeze = false``) changes the
states at every step: it is never cached.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy

from ..errors import Errors, FeatureError
from .batching import grid_width

ENV = "SPACY_LLAMA_FEATURE_CACHE_MB"
DEFAULT_MB = 1024
Key = Tuple[str, Union[int, str], Tuple[int, ...]]


def budget_bytes() -> int:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if mb < 0:
        raise FeatureError(Errors.E835.format(env=ENV, value=raw))
    return int(mb * 2**20)


class FeatureCache:
    """Per-span states, ``(len(row), hidden)`` or ``(layers, len(row), hidden)`` float32."""

    def __init__(self) -> None:
        self._data: OrderedDict[Key, numpy.ndarray] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def states(
        self,
        fingerprint: str,
        layer: Union[int, str],
        rows: Sequence[Sequence[int]],
        compute: Callable[[List[List[int]]], numpy.ndarray],
    ) -> numpy.ndarray:
        """The right-padded grid of ``rows``' states (as ``batching.hidden_states``), with
        ``compute`` run only on the rows not cached (each distinct row once)."""
        budget = budget_bytes()
        if budget <= 0:
            return compute([list(r) for r in rows])
        keys: List[Key] = [(fingerprint, layer, tuple(int(i) for i in r)) for r in rows]
        todo: Dict[Key, int] = {}
        for k, key in enumerate(keys):
            if key not in self._data and key not in todo:
                todo[key] = k
        found: Dict[Key, numpy.ndarray] = {}
        if todo:
            grid = compute([list(rows[k]) for k in todo.values()])
            per_row = grid if layer != "mix" else numpy.moveaxis(grid, 1, 0)
            for j, (key, k) in enumerate(todo.items()):
                found[key] = numpy.ascontiguousarray(per_row[j][..., : len(rows[k]), :])
        self.hits += len(rows) - len(todo)
        self.misses += len(todo)
        out = self._assemble(keys, rows, found)
        for key, value in found.items():
            self._put(key, value, budget)
        return out

    def _assemble(
        self, keys: List[Key], rows: Sequence[Sequence[int]], found: Dict[Key, numpy.ndarray]
    ) -> numpy.ndarray:
        width = grid_width(rows)
        parts = [found[key] if key in found else self._get(key) for key in keys]
        sample = parts[0] if parts else numpy.zeros((0, 0), "f")
        hidden = sample.shape[-1]
        if sample.ndim == 3:  # "mix": (layers, pieces, hidden) per row
            out = numpy.zeros((sample.shape[0], len(rows), width, hidden), "f")
            for i, part in enumerate(parts):
                out[:, i, : part.shape[1]] = part
            return out
        grid = numpy.zeros((len(rows), width, hidden), "f")
        for i, part in enumerate(parts):
            grid[i, : part.shape[0]] = part
        return grid

    def _get(self, key: Key) -> numpy.ndarray:
        self._data.move_to_end(key)
        return self._data[key]

    def _put(self, key: Key, value: numpy.ndarray, budget: int) -> None:
        if value.nbytes > budget:
            return
        if key in self._data:
            return
        self._data[key] = value
        self.bytes += value.nbytes
        while self.bytes > budget and self._data:
            _, old = self._data.popitem(last=False)
            self.bytes -= old.nbytes
