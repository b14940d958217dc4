"""``spacy-llama.LoRA.v1``: the validated settings of a LoRA adapter block (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import Errors, TrainingError
from ..registry import llama_adapters

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoRASettings:
    r: int
    alpha: float
    dropout: float
    target_modules: Tuple[str, ...]
    layers: Optional[int]  # train only the top N decoder layers; None: all

    def as_dict(self) -> Dict[str, Any]:
        return {
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": list(self.target_modules),
            "layers": self.layers,
        }

    def check(self, name: str) -> LoRASettings:
        """Each setting in its range; the message names the component and the setting."""
        checks = [
            ("r", self.r, self.r >= 1, "use an integer of at least 1 (e.g. 8)"),
            ("alpha", self.alpha, self.alpha > 0, "use a positive number (e.g. 16)"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "use a number in [0, 1)"),
            ("target_modules", list(self.target_modules), bool(self.target_modules),
             'name at least one projection, e.g. ["q_proj", "v_proj"]'),
            ("layers", self.layers, self.layers is None or self.layers >= 1,
             "use null (all layers) or a number of top layers of at least 1"),
        ]  # fmt: skip
        for setting, value, ok, expected in checks:
            if not ok:
                raise TrainingError(
                    Errors.E500.format(name=name, setting=setting, value=value, expected=expected)
                )
        return self

    def layer_ids(self, name: str, n_layers: int) -> Optional[List[int]]:
        """The indices of the trained decoder layers (the top ``layers``), None for all."""
        if self.layers is None:
            return None
        if self.layers > n_layers:
            expected = f"the model has {n_layers} layers: use at most {n_layers}, or null"
            raise TrainingError(
                Errors.E500.format(
                    name=name, setting="layers", value=self.layers, expected=expected
                )
            )
        return list(range(n_layers - self.layers, n_layers))


@llama_adapters("spacy-llama.LoRA.v1")
def lora_v1(
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: List[str] = list(DEFAULT_TARGETS),  # noqa: B006 - read only
    layers: Optional[int] = None,
) -> LoRASettings:
    """Low-rank adapters on the given projections (peft); the base weights stay frozen.

    ``dropout`` is the only dropout of a trained llama component: spaCy's
    ``[training] dropout`` (the ``drop`` passed to ``update``) is not used, since it is meant
    for spaCy's own layers and peft builds its dropout modules (none at 0) with the adapter.
    """
    return LoRASettings(
        r=int(r),
        alpha=float(alpha),
        dropout=float(dropout),
        target_modules=tuple(str(t) for t in target_modules),
        layers=None if layers is None else int(layers),
    )
