"""Choosing a device and a dtype, and moving a loaded model there."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch

from ..errors import Errors, ModelLoadError
from .cpu_features import cpu_features

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _thinc_gpu_id() -> Optional[int]:
    """The GPU spaCy was told to use (`spacy.require_gpu(i)` / `--gpu-id i`), if any."""
    try:
        from thinc.api import CupyOps, get_current_ops

        if isinstance(get_current_ops(), CupyOps):  # pragma: no cover - needs a GPU
            import cupy

            return int(cupy.cuda.runtime.getDevice())
    except Exception:  # pragma: no cover - thinc/cupy not usable
        return None
    return None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks spaCy's GPU if one was required, then CUDA, then MPS, then CPU."""
    if name == "auto":
        gpu = _thinc_gpu_id()
        if gpu is not None:  # pragma: no cover - needs a GPU
            return torch.device("cuda", gpu)
        if torch.cuda.is_available():  # pragma: no cover - needs a GPU
            return torch.device("cuda", 0)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():  # pragma: no cover - needs a Mac
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ModelLoadError(Errors.E157.format(name=name)) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(Errors.E158.format(name=name))
    return device


# What ``auto`` may pick on a CPU, best first; each must pass this CPU's check. float32 alone:
# exact, and the one dtype every CPU runs on optimized kernels (bf16 would halve the bytes
# read per step where oneDNN runs it, but it changes the numbers).
AUTO_CPU_DTYPES = (torch.float32,)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU (see ``AUTO_CPU_DTYPES``); bf16 on CUDA when supported, else
    fp16; fp16 on MPS."""
    if name == "auto":
        if device.type == "cuda":  # pragma: no cover - needs a GPU
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":  # pragma: no cover - needs a Mac
            return torch.float16
        return next(d for d in AUTO_CPU_DTYPES if cpu_features().fast_matmul(d))
    if name not in _DTYPES:
        raise ModelLoadError(Errors.E159.format(name=name))
    return _DTYPES[name]


def place(model: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Cast the parameters to ``dtype``, not the float32 buffers. transformers keeps the
    rotary ``inv_freq`` in float32 at every dtype (``from_pretrained(torch_dtype=...)`` does);
    cast to bf16 it keeps 3 significant digits, the rotary angles drift with the position and
    greedy outputs part from transformers' after a few tokens."""
    kept = [
        (name, buf)
        for name, buf in model.named_buffers(remove_duplicate=False)
        if buf.dtype == torch.float32
    ]
    _warn_if_slow(device, dtype)
    model = model.to(dtype=dtype)
    for name, buf in kept:
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = buf
    if device.type != "cpu":  # pragma: no cover - needs an accelerator
        model = model.to(device)
    model.eval()
    return model


def _warn_if_slow(device: torch.device, dtype: torch.dtype) -> None:
    """It runs, but a bf16 model on an AVX2-only CPU decodes tens of times slower than fp32."""
    features = cpu_features()
    if device.type == "cpu" and not features.fast_matmul(dtype):
        warnings.warn(
            f"[spacy-llama] dtype {str(dtype).replace('torch.', '')}: "
            f'{features.why_slow(dtype)}. Use dtype = "float32" (or "auto").',
            stacklevel=3,
        )
