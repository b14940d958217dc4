"""GGUF block types, decoded in one place: raw tensor bytes -> what a projection keeps.

A 4-bit type (``Q4_0``, ``Q4_1``, ``Q4_K``) is an affine code on groups of 32 weights:
``w = scale * q + offset`` with ``q`` in 0..15. That is exactly the int4 group-wise layout
of torch's CPU kernel (``_weight_int4pack_mm_for_cpu``: ``w = (q - 8) * scale + zero``), so
these types are *re-labelled*, never re-quantised: :func:`decode_int4` returns the file's own
codes and per-group scales. Every other type is de-quantised to float32 one tensor at a time
(gguf-py's reference decoders) for the caller to keep as int8 per channel or as float.

Which types are kept how (``KEPT``) is the contract of ``spacy-llama.GGUF.v2``; anything
else (IQ*, Q2_K, Q3_K, ...) is de-quantised for that tensor alone, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import Q4_K, dequantize

Q = GGMLQuantizationType
GROUP = 32  # the int4 group size: the sub-block of every 4-bit GGUF type

# What each kept type becomes in a projection when quantize = "auto" (the file's precision).
KEPT: Dict[GGMLQuantizationType, str] = {
    Q.Q4_0: "int4",
    Q.Q4_1: "int4",
    Q.Q4_K: "int4",
    Q.Q5_0: "int8",
    Q.Q5_1: "int8",
    Q.Q5_K: "int8",
    Q.Q6_K: "int8",
    Q.Q8_0: "int8",
    Q.F16: "bfloat16",
    Q.BF16: "bfloat16",
    Q.F32: "float32",
}
INT4_TYPES = frozenset(t for t, kept in KEPT.items() if kept == "int4")


@dataclass
class Int4Groups:
    """``w[n, k] = (q[n, k] - 8) * scale[n, k // 32] + zero[n, k // 32]``."""

    q: np.ndarray  # (N, K) uint8 in 0..15
    scale: np.ndarray  # (N, K // 32) float32
    zero: np.ndarray  # (N, K // 32) float32

    def dequantize(self) -> np.ndarray:
        n, k = self.q.shape
        groups = self.q.reshape(n, k // GROUP, GROUP).astype(np.float32) - 8.0
        return (groups * self.scale[..., None] + self.zero[..., None]).reshape(n, k)


def type_name(qtype: int) -> str:
    try:
        return GGMLQuantizationType(qtype).name
    except ValueError:
        return f"type {qtype}"


def expected_bytes(qtype: GGMLQuantizationType, n_elements: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return n_elements // block * size


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(blocks, 16) bytes -> (blocks, 32) codes: low nibbles are elements 0..15, high 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def decode_int4(raw: np.ndarray, qtype: GGMLQuantizationType, shape: tuple) -> Int4Groups:
    """The codes and group scales of a ``Q4_0``/``Q4_1``/``Q4_K`` tensor of ``shape`` (N, K)."""
    n, k = shape
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[qtype][1])
    if qtype == Q.Q4_0:  # d (f16), 16 bytes of codes; w = d * (q - 8)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
        q = _nibbles(blocks[:, 2:])
        scale, zero = d, np.zeros_like(d)
    elif qtype == Q.Q4_1:  # d, m (f16), codes; w = d * q + m
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
        q = _nibbles(blocks[:, 4:])
        scale, zero = d, m + 8.0 * d
    elif qtype == Q.Q4_K:  # 256-weight super-blocks of 8 groups; w = d*sc*q - dmin*m
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, mins = Q4_K.get_scale_min(blocks[:, 4:16].copy())
        scale = (d * sc.astype(np.float32)).reshape(-1)  # (blocks * 8,)
        offset = (dmin * mins.astype(np.float32)).reshape(-1)
        # 4 chunks of 32 bytes: low nibbles are group 2j, high nibbles group 2j + 1
        qs = blocks[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
        q = (qs & 0x0F).reshape(-1, GROUP)
        zero = 8.0 * scale - offset
    else:  # pragma: no cover - callers check INT4_TYPES first
        raise ValueError(f"not a 4-bit GGUF type: {type_name(qtype)}")
    return Int4Groups(
        q=q.reshape(n, k).astype(np.uint8),
        scale=np.ascontiguousarray(scale.reshape(n, k // GROUP), dtype=np.float32),
        zero=np.ascontiguousarray(zero.reshape(n, k // GROUP), dtype=np.float32),
    )


def decode_float(raw: np.ndarray, qtype: GGMLQuantizationType, shape: tuple) -> np.ndarray:
    """Any type gguf-py decodes, as float32 of ``shape`` (one tensor at a time)."""
    if qtype == Q.F32:
        return raw.view(np.float32).reshape(shape).copy()  # writable: torch shares it
    if qtype == Q.F16:
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    return np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(shape)
