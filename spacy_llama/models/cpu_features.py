"""What this CPU runs on optimized kernels: bf16 and fp16 through oneDNN, int8 dot products.

Why it matters: oneDNN refuses to prepack bf16 weights on a CPU without AVX-512 (BW, VL,
DQ) or AVX-NE-CONVERT ("bf16 path needs the cpu support ..."), and torch then runs bf16 and
fp16 matmuls on its reference kernels, some 50x slower than float32 (a 2048x2048 bf16
matmul takes minutes on an AVX2-only CPU). What picks a dtype, a weight layout or a
benchmark probe asks here first.

The answers are torch's own checks (the ones its oneDNN calls make; they honour oneDNN's
``ONEDNN_MAX_CPU_ISA``) and, for int8, the flags of ``/proc/cpuinfo``. Setting
``SPACY_LLAMA_CPU_FEATURES`` to comma-separated ``/proc/cpuinfo`` flags (``"avx,avx2,fma"``
is an AVX2-only CPU) replaces this CPU's flags: it can only take capabilities away, never
claim ones torch does not have. Answers are cached per process (``cpu_features.cache_clear()``
after changing the variable).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import FrozenSet

import torch

ENV = "SPACY_LLAMA_CPU_FEATURES"
AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
BF16_FLAGS = frozenset({"avx_ne_convert", "bf16"})  # or AVX512_CORE; "bf16" is Arm's
FP16_FLAGS = frozenset({"avx512_fp16", "avx_ne_convert", "asimdhp"})  # "asimdhp": Arm
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})  # "asimddp": Arm
NEEDS = {
    torch.bfloat16: "AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT",
    torch.float16: "AVX512-FP16 or AVX-NE-CONVERT",
}


@dataclass(frozen=True)
class CpuFeatures:
    onednn_bf16: bool  # oneDNN's bf16 path: prepacked bf16 weights, bf16 GEMMs at speed
    onednn_fp16: bool  # the same for fp16 (AVX512-FP16 or AVX-NE-CONVERT)
    int8_vnni: bool  # int8 dot-product instructions: quantize = "int8" at full speed
    source: str  # who says so, for messages

    def fast_matmul(self, dtype: torch.dtype) -> bool:
        """Whether ``dtype`` matmuls run on optimized kernels (not torch's reference ones)."""
        if dtype == torch.bfloat16:
            return self.onednn_bf16
        if dtype == torch.float16:
            return self.onednn_fp16
        return True

    def why_slow(self, dtype: torch.dtype) -> str:
        """Why ``dtype`` matmuls are slow here, for warnings and the benchmarks."""
        name = str(dtype).replace("torch.", "")
        return (
            f"this CPU ({self.source}) has no oneDNN {name} path (it needs "
            f"{NEEDS.get(dtype, '?')}): {name} matmuls run on torch's reference kernels, "
            "some 50x slower than float32"
        )


@functools.cache
def cpu_features() -> CpuFeatures:
    """This process's answer (cached); see the module docstring."""
    override = os.environ.get(ENV) or None  # set but empty: not set
    limit = _parse(override) if override else None  # None: torch's checks decide alone
    flags = limit if limit is not None else _cpuinfo_flags()
    bf16, fp16 = (_torch_says(f"_is_mkldnn_{t}_supported") for t in ("bf16", "fp16"))
    return CpuFeatures(
        onednn_bf16=bf16 and (limit is None or _bf16(limit)),
        onednn_fp16=fp16 and (limit is None or bool(limit & FP16_FLAGS)),
        int8_vnni=bool(flags & INT8_FLAGS),
        source=f"{ENV}={override}" if override else "as torch's oneDNN reports it",
    )


def _bf16(flags: FrozenSet[str]) -> bool:
    return AVX512_CORE <= flags or bool(flags & BF16_FLAGS)


def _torch_says(check: str) -> bool:
    """torch.ops.mkldnn's own capability check (False without oneDNN or the check)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        return False


def _cpuinfo_flags() -> FrozenSet[str]:
    """The first ``flags`` (x86) or ``Features`` (Arm) line of /proc/cpuinfo (none on macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _parse(value: str) -> FrozenSet[str]:
    return frozenset(f.strip().lower() for f in value.replace(" ", ",").split(",") if f.strip())
