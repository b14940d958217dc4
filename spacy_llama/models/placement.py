"""Choosing a device and a dtype, and moving a loaded model there."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import Errors, ModelLoadError

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


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU (exact, and fp16 matmuls are slow or missing there);
    bf16 on CUDA when supported, else fp16; fp16 on MPS."""
    if name == "auto":
        if device.type == "cuda":  # pragma: no cover - needs a GPU
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":  # pragma: no cover - needs a Mac
            return torch.float16
        return torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(Errors.E159.format(name=name))
    return _DTYPES[name]


def place(model: Any, device: torch.device, dtype: torch.dtype) -> Any:
    model = model.to(dtype=dtype)
    if device.type != "cpu":  # pragma: no cover - needs an accelerator
        model = model.to(device)
    model.eval()
    return model
