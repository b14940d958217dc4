"""How much memory a model will take, what this machine has, and what ``auto`` picks.

Checked *before* anything is allocated: a model that cannot fit fails with the memory it
needs, the memory that is free and the settings that would fit, instead of the kernel's
OOM killer ending the process halfway through a load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch

from ..errors import Errors, ModelLoadError

logger = logging.getLogger("spacy_llama")

GiB = 1 << 30
# Room kept free beside the weights: the runtime (torch, transformers, spaCy: ~0.6 GiB),
# activations, the KV cache of a batch, the tokenizer.
HEADROOM = 1.5 * GiB
# "auto" keeps float32 only while its weights take at most this share of the free memory.
FP32_SHARE = 0.5


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit."""
    free = _meminfo("MemAvailable")
    limit = _cgroup_limit()
    if limit is not None:
        free = min(free, limit) if free else limit
    return free or 1 << 62


def _meminfo(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0


def _cgroup_limit() -> Optional[int]:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            usage = _cgroup_usage()
            return int(text) - usage
    return None


def _cgroup_usage() -> int:
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        try:
            return int(Path(path).read_text().strip())
        except (OSError, ValueError):
            continue
    return 0


def release_freed_memory() -> None:
    """Hand the heap that a streaming load freed back to the OS. glibc keeps freed chunks
    for reuse, so after converting tensor by tensor the RSS stays ~0.6 GiB above the kept
    weights of a 1.7B model (benchmarks/scale.py); ``malloc_trim(0)`` returns them."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:  # pragma: no cover - not a C library we know
        return
    try:
        libc = ctypes.CDLL(name)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:  # glibc only (musl and macOS have none)
            trim(0)
    except OSError:  # pragma: no cover
        pass


def human(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


# bytes per weight of each way of keeping a projection
_BYTES = {"int4": 0.5 + 4 / 32, "int8": 1.0, "bfloat16": 2.0, "float16": 2.0, "float32": 4.0}


def projection_bytes(n_weights: int, mode: str) -> float:
    return n_weights * _BYTES[mode]


def auto_activation_dtype() -> torch.dtype:
    """Quantized weights: float32 activations (norms, attention, the KV cache). The int4/int8
    kernels take bf16 rows, but each row is cast on its own, so a document's numbers do not
    depend on its batch. In bf16 everywhere, attention sums over a batch's padded keys round
    differently and greedy choices on near-ties change with the batch (measured on the tiny
    test models); ``dtype = "bfloat16"`` trades that for half the KV cache."""
    return torch.float32


def dtype_from_name(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass
class MemoryPlan:
    source: str
    setting: str  # what was chosen, for the log and messages
    dtype: torch.dtype  # the activations' (and float weights') dtype
    weight_bytes: float
    free_bytes: int

    def describe(self) -> str:
        return (
            f"[spacy-llama] {self.source}: {self.setting}, weights ~{human(self.weight_bytes)} "
            f"({human(self.free_bytes)} available)"
        )


def check_fits(
    source: str, need: float, setting: str, options: Sequence[Tuple[str, float]]
) -> None:
    """Fail before allocating when ``need`` (+ headroom) exceeds the available memory."""
    free = available_memory()
    if need + HEADROOM <= free:
        return
    fits = [name for name, size in options if size + HEADROOM <= free]
    raise ModelLoadError(
        Errors.E900.format(
            source=source,
            need=human(need + HEADROOM),
            setting=setting,
            free=human(free),
            fits=", ".join(fits) if fits else "none on this machine (a smaller model, or more RAM)",
        )
    )


def plan_gguf(
    file: Path, tensors: Iterable[Any], *, quantize: Optional[str], dtype: str
) -> MemoryPlan:
    """The GGUF.v2 plan: the activation dtype and what the weights will take."""
    from .gguf_blocks import KEPT, Q

    items: List[Tuple[str, int, Any]] = [
        (t.name, int(t.n_elements), Q(int(t.tensor_type))) for t in tensors
    ]
    if quantize is None:
        act = torch.float32 if dtype == "auto" else dtype_from_name(dtype)
    else:
        act = auto_activation_dtype() if dtype == "auto" else dtype_from_name(dtype)
    float_mode = str(act).replace("torch.", "")

    def total(mode_of: Any) -> float:
        size = 0.0
        for name, n, qtype in items:
            mode = mode_of(name, qtype)
            size += projection_bytes(n, mode if mode != "float" else float_mode)
        return size

    def kept(name: str, qtype: Any) -> str:
        mode = KEPT.get(qtype, "float")
        return mode if mode in ("int4", "int8") else "float"

    def forced(mode: str) -> Any:
        def mode_of(name: str, qtype: Any) -> str:
            if name == "token_embd.weight" or "norm" in name:
                return kept(name, qtype) if mode != "float" and "norm" not in name else "float"
            return mode

        return mode_of

    modes = {
        "auto": lambda name, qtype: kept(name, qtype) if "norm" not in name else "float",
        "int8": forced("int8"),
        "int4": forced("int4"),
        None: forced("float"),
    }
    need = total(modes[quantize])
    setting = f"quantize = {quantize!r}".replace("None", "null") + f", activations {float_mode}"
    options = [
        (f"quantize = {q!r}".replace("None", "null"), total(modes[q]))
        for q in ("int4", "int8", "auto", None)
        if q != quantize
    ]
    check_fits(str(file), need, setting, options)
    return MemoryPlan(str(file), setting, act, need, available_memory())
