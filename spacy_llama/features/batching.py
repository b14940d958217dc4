"""Running a decoder over rows of piece ids so that each row's hidden states are the same
whatever batch, padding or order it comes in.

Three things make that so: rows are padded on the right (a causal model's real pieces never
see the pads after them), every row's positions start at 0 (rotary angles depend on the
position, and a left-padded row would start later), and attention runs in transformers'
eager implementation for the call. SDPA is not batch-invariant on CPU: an unpadded batch
takes its ``is_causal`` kernel, a padded one the masked kernel, and the two differ in the
last bits; eager attention adds the masked positions as exact zeros. And every matmul
has at least 8 rows: rows are padded to a multiple of ``PAD_MULTIPLE`` pieces, because BLAS
takes another kernel for a product of fewer than 8 rows (a lone 5-piece span would not
match itself inside a batch). Rows are run in
length-sorted sub-batches of at most ``batch_tokens`` padded pieces (less padding, bounded
memory), and copied into one right-padded grid.

The pass is transformers' own forward through ``generation/rows.forward_after``, not the
engine's fused decoder: that one's SDPA is not batch-invariant, it keeps no per-layer
states, builds no graph and bypasses peft's LoRA layers (``freeze = false``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, List, Sequence, Tuple, Union

import numpy
import torch

from ..generation.rows import forward_after, group_by_padded_size

_ATTN_LOCK = threading.RLock()
PAD_MULTIPLE = 8


def grid_width(rows: Sequence[Sequence[int]]) -> int:
    """The padded width of ``rows``: the longest, rounded up to ``PAD_MULTIPLE``."""
    longest = max((len(r) for r in rows), default=0)
    return -(-max(longest, 1) // PAD_MULTIPLE) * PAD_MULTIPLE


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Eager attention for the duration of the call; the model's setting is restored after
    (the module may be shared with the ``llama`` component, which keeps its own). The switch
    is on the shared config: a ``llama`` component generating on the same module in another
    thread at that moment would run eager too (slower, and rounded as eager rounds)."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    with _ATTN_LOCK:
        saved = {key: getattr(c, "_attn_implementation", None) for key, c in configs.items()}
        try:
            for config in configs.values():
                config._attn_implementation = "eager"
            yield
        finally:
            for key, config in configs.items():
                config._attn_implementation = saved[key]


def sub_batches(lengths: Sequence[int], batch_tokens: int) -> List[List[int]]:
    """Row indices, longest first, grouped so each group's padded size fits the budget
    (a row longer than the budget runs alone; a row counts at least ``PAD_MULTIPLE``)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    floored = [max(lengths[i], PAD_MULTIPLE) for i in order]
    return [[order[k] for k in g] for g in group_by_padded_size(floored, batch_tokens)]


Parts = List[Tuple[List[int], int, "torch.Tensor"]]


def final_normed(base: Any, states: Sequence[Any], index: int) -> Any:
    """Hidden state ``index`` through the model's own final norm (``base.norm``), as the
    last one already is. A decoder's middle layers carry a few massive activations (in
    SmolLM2-135M one dimension of the first piece is thousands of times the rest, and its
    pooled value swings with the doc's length); the norm puts every layer on the last
    layer's scale, which a listener's linear layer and a mix of layers need."""
    if index % len(states) == len(states) - 1:
        return states[index]
    return base.norm(states[index])


def _run_groups(
    base: Any, rows: Sequence[Sequence[int]], pad_id: int, layers: Union[int, str],
    batch_tokens: int, normalize: bool = False,
) -> Parts:  # fmt: skip
    """Each sub-batch's rows, width and float32 states ((layers or 1), rows, width, hidden),
    as torch tensors (with a graph, if autograd is on); ``normalize``: each layer through
    the final norm (:func:`final_normed`)."""
    parts: Parts = []
    device = next(base.parameters()).device
    with eager_attention(base):
        for group in sub_batches([len(r) for r in rows], batch_tokens):
            g_rows = [rows[i] for i in group]
            width = grid_width(g_rows)
            result, _ = forward_after(
                base, g_rows, None, device=device, pad_id=pad_id, keep=False, width=width,
                output_hidden_states=True,
            )  # fmt: skip
            states = result.hidden_states
            if normalize:
                indices = range(len(states)) if layers == "mix" else [int(layers)]
                picked = torch.stack([final_normed(base, states, i) for i in indices])
            else:
                picked = torch.stack(states) if layers == "mix" else states[int(layers)][None]
            parts.append((group, width, picked.float()))
    return parts


def _grid(parts: Parts, n_rows: int, width: int, layers: Union[int, str]) -> numpy.ndarray:
    """The sub-batches' states copied (detached) into one right-padded numpy grid."""
    out: Any = None
    for group, g_width, picked in parts:
        data = picked.detach().cpu().numpy()
        if out is None:
            out = numpy.zeros((data.shape[0], n_rows, width, data.shape[-1]), "f")
        out[:, group, :g_width] = data
    if out is None:
        out = numpy.zeros((1, 0, 0, 0), "f")
    return out if layers == "mix" else out[0]  # type: ignore[no-any-return]


def hidden_states(
    base: Any, rows: Sequence[Sequence[int]], pad_id: int, layers: Union[int, str],
    batch_tokens: int, normalize: bool = False,
) -> numpy.ndarray:  # fmt: skip
    """float32 hidden states of ``rows``, right-padded: (rows, width, hidden) for one
    layer, (layers, rows, width, hidden) for ``"mix"``. No autograd graph is built."""
    with torch.inference_mode():
        parts = _run_groups(base, rows, pad_id, layers, batch_tokens, normalize)
        return _grid(parts, len(rows), grid_width(rows), layers)


StatesBackprop = Callable[[numpy.ndarray], None]


def trainable_hidden_states(
    base: Any, rows: Sequence[Sequence[int]], pad_id: int, layers: Union[int, str],
    batch_tokens: int, normalize: bool = False,
) -> Tuple[numpy.ndarray, StatesBackprop]:  # fmt: skip
    """The states of :func:`hidden_states` (same batching, same numbers), with the autograd
    graph kept: the backprop takes d(states), shaped as the states, and accumulates the
    gradients in the parameters that require them (the LoRA weights). Call it once."""
    parts = _run_groups(base, rows, pad_id, layers, batch_tokens, normalize)
    states = _grid(parts, len(rows), grid_width(rows), layers)

    def backprop(d_states: numpy.ndarray) -> None:
        d_grid = d_states if layers == "mix" else d_states[None]
        tensors = [picked for _, _, picked in parts if picked.requires_grad]
        grads = [
            torch.from_numpy(numpy.ascontiguousarray(d_grid[:, group, :width], dtype="f"))
            for group, width, picked in parts
            if picked.requires_grad
        ]
        if tensors:
            torch.autograd.backward(tensors, grads)
        parts.clear()  # the graph is freed by backward; drop the tensors too

    return states, backprop
