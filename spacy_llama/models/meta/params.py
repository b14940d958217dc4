"""Meta's ``params.json``: the hyperparameters that shape the model, and its family."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from ...errors import Errors, ModelLoadError

# Context lengths Meta trained each family with (params.json does not say).
CONTEXT_LENGTHS = {
    "llama1": 2048,
    "llama2": 4096,
    "codellama": 16384,
    "llama3": 8192,
    "llama3.1": 131072,
}


@dataclass(frozen=True)
class MetaParams:
    """The fields of Meta's params.json that shape the model (unknown keys are ignored)."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int  # -1: take it from the embedding
    multiple_of: int
    ffn_dim_multiplier: Optional[float]
    norm_eps: float
    rope_theta: float
    use_scaled_rope: bool
    rope_scaling_factor: Optional[float]

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """Meta's FeedForward hidden size (model.py: 2/3 of 4*dim, scaled, rounded up)."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def family(self, *, tiktoken: bool) -> str:
        """Which release this is, for the context length Meta trained it with."""
        if self.use_scaled_rope:
            return "llama3.1"
        if tiktoken or self.vocab_size >= 128000 or self.rope_theta == 500000.0:
            return "llama3"
        if self.rope_theta >= 1e6:
            return "codellama"
        # Llama 1 shipped norm_eps 1e-6; Llama 2 changed it to 1e-5.
        return "llama1" if self.norm_eps <= 1e-6 else "llama2"


def read_params(folder: Path) -> MetaParams:
    file = folder / "params.json"
    if not file.exists():
        raise ModelLoadError(Errors.E188.format(path=str(folder)))
    try:
        raw = json.loads(file.read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(Errors.E189.format(path=str(file), error=e)) from e
    if not isinstance(raw, dict):
        raise ModelLoadError(Errors.E190.format(path=str(file), kind=type(raw).__name__))
    try:
        return _params_from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(Errors.E191.format(path=str(file), error=e)) from e


def _params_from_dict(raw: Dict[str, Any]) -> MetaParams:
    def need_int(name: str) -> int:
        if name not in raw:
            raise KeyError(f"missing {name!r}")
        return _as_int(name, raw[name])

    n_heads = need_int("n_heads")
    mult = raw.get("ffn_dim_multiplier")
    scale = raw.get("rope_scaling_factor")
    params = MetaParams(
        dim=need_int("dim"),
        n_layers=need_int("n_layers"),
        n_heads=n_heads,
        n_kv_heads=_as_int("n_kv_heads", raw.get("n_kv_heads") or n_heads),
        vocab_size=_as_int("vocab_size", raw.get("vocab_size", -1)),
        multiple_of=_as_int("multiple_of", raw.get("multiple_of", 256)),
        ffn_dim_multiplier=None if mult is None else float(mult),
        norm_eps=float(raw.get("norm_eps", 1e-5)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        use_scaled_rope=bool(raw.get("use_scaled_rope", False)),
        rope_scaling_factor=None if scale is None else float(scale),
    )
    if (
        params.dim % n_heads
        or n_heads % params.n_kv_heads
        or params.multiple_of < 1
        or params.n_layers < 1
    ):
        raise ValueError(
            f"dim={params.dim}, n_heads={n_heads}, n_kv_heads={params.n_kv_heads}, "
            f"multiple_of={params.multiple_of}, n_layers={params.n_layers} do not fit together"
        )
    return params


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name!r} must be an integer, got {value!r}")
    return value
