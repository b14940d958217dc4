"""A learned scalar mix of hidden layers: ``gamma * sum_l softmax(w)_l * H_l``.

A decoder's middle layers are usually better features than its last; the mix learns which,
from the listeners' gradients (and passes them on to the layers when LoRA adapters train).
Weights start equal (w = 0), gamma at 1. Plain numpy: the layers arrive as numpy arrays, and
the mix is tiny.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy


def softmax(w: numpy.ndarray) -> numpy.ndarray:
    e = numpy.exp(w - w.max())
    return e / e.sum()  # type: ignore[no-any-return]


MixBackprop = Callable[[numpy.ndarray], Tuple[numpy.ndarray, numpy.ndarray]]


def scalar_mix(
    layers: numpy.ndarray, weights: numpy.ndarray, gamma: numpy.ndarray
) -> Tuple[numpy.ndarray, MixBackprop]:
    """``layers``: (L, ...) -> the mix (...), and a backprop from d(mix) to (d_weights,
    d_gamma)."""
    s = softmax(weights)
    mixed = numpy.tensordot(s, layers, axes=(0, 0)).astype("f")
    out = (gamma[0] * mixed).astype("f")

    def backprop(d_out: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
        d_gamma = numpy.array([float((d_out * mixed).sum())], dtype="f")
        axes = (tuple(range(1, layers.ndim)), tuple(range(d_out.ndim)))
        d_s = gamma[0] * numpy.tensordot(layers, d_out, axes=axes)
        d_w = s * (d_s - float((s * d_s).sum()))
        return d_w.astype("f"), d_gamma

    return out, backprop


def mix_layer_grads(
    weights: numpy.ndarray, gamma: numpy.ndarray, d_out: numpy.ndarray
) -> numpy.ndarray:
    """d(layers) of the mix: (L, ...) = gamma * softmax(w)_l * d(mix), for training the
    LLaMA behind it (``weights`` and ``gamma`` as they were in the forward pass)."""
    s = softmax(weights).astype("f")
    shape = (len(s),) + (1,) * d_out.ndim
    return (gamma[0] * s.reshape(shape) * d_out[None]).astype("f")  # type: ignore[no-any-return]
