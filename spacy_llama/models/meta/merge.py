"""Merging Meta's model-parallel shards into one state dict in transformers' layout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from ...errors import Errors, ModelLoadError
from .paging import drop_pages
from .params import MetaParams
from .shards import ShardSet, check_shards

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Meta name suffix -> (transformers name suffix, concatenation dim; None = replicated).
_LAYER_MAP: Dict[str, Tuple[str, Optional[int]]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
_TOP_MAP: Dict[str, Tuple[str, Optional[int]]] = {
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}


def merge_shards(
    shards: ShardSet,
    params: MetaParams,
    *,
    dtype: Optional[torch.dtype],
    put: Optional[Callable[[str, torch.Tensor], None]] = None,
) -> Dict[str, torch.Tensor]:
    """Meta's shards -> one transformers state dict (q/k permuted), one tensor at a time.
    With ``put``, each merged tensor is handed to it as it is made (a quantizing loader keeps
    its own form and drops the float tensor) and the state holds ``meta`` placeholders."""
    import torch

    check_shards(shards)
    check_replicated(shards)
    state: Dict[str, torch.Tensor] = {}

    def keep(key: str, tensor: torch.Tensor) -> None:
        if put is None:
            state[key] = tensor
            return
        put(key, tensor)
        state[key] = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")

    keep(
        "model.embed_tokens.weight",
        _merge(
            shards.parts("tok_embeddings.weight"),
            _embedding_dim(shards, params),
            dtype,
            shards.mapped,
        ),
    )
    for meta_key, (hf_key, dim) in _TOP_MAP.items():
        if meta_key in shards.tensors[0]:
            keep(hf_key, _merge(shards.parts(meta_key), dim, dtype, shards.mapped))
    for layer in range(params.n_layers):
        for suffix, (hf_suffix, dim) in _LAYER_MAP.items():
            meta_key = f"layers.{layer}.{suffix}"
            if meta_key not in shards.tensors[0]:
                raise ModelLoadError(
                    Errors.E183.format(
                        path=str(shards.files[0]), key=meta_key, n_layers=params.n_layers
                    )
                )
            parts = shards.parts(meta_key)
            if suffix in ("attention.wk.weight", "attention.wv.weight"):
                parts = _dedup_kv(parts, shards, meta_key, params)
            tensor = _merge(parts, dim, dtype, shards.mapped)
            if suffix == "attention.wq.weight":
                tensor = permute_rotary(tensor, params.n_heads)
            elif suffix == "attention.wk.weight":
                tensor = permute_rotary(tensor, params.n_kv_heads)
            keep(f"model.layers.{layer}.{hf_suffix}", tensor)
    check_shapes(state, params, shards.folder)
    return state


def check_replicated(shards: ShardSet) -> None:
    """Tensors every shard holds a copy of (the norms) must be equal on every shard.

    Keys and shapes cannot tell a shard of another model of the same size; its norms can.
    They are small, so reading them costs little."""
    import torch

    present = shards.tensors[0]
    layer_suffixes = tuple(s for s, (_, dim) in _LAYER_MAP.items() if dim is None)
    keys = [k for k, (_, dim) in _TOP_MAP.items() if dim is None and k in present]
    keys += sorted(k for k in present if k.startswith("layers.") and k.endswith(layer_suffixes))
    for key in keys:
        first, *others = shards.parts(key)
        for file, part in zip(shards.files[1:], others):
            if not torch.equal(first, part):
                raise ModelLoadError(
                    Errors.E182.format(first=str(shards.files[0]), other=str(file), key=key)
                )
        for part in others:  # only the first copy is kept (see _merge)
            drop_pages(part, shards.mapped)


def _embedding_dim(shards: ShardSet, params: MetaParams) -> Optional[int]:
    """Llama 1/2 split the embedding by columns (dim 1), Llama 3 by rows (dim 0)."""
    if len(shards.files) == 1:
        return None
    cols = shards.tensors[0]["tok_embeddings.weight"].shape[1]
    if cols == params.dim:
        return 0
    if cols * len(shards.files) == params.dim:
        return 1
    raise ModelLoadError(
        Errors.E184.format(
            path=str(shards.files[0]),
            cols=cols,
            n_shards=len(shards.files),
            dim=params.dim,
            split=params.dim // len(shards.files),
        )
    )


def _dedup_kv(
    parts: List[torch.Tensor], shards: ShardSet, key: str, params: MetaParams
) -> List[torch.Tensor]:
    """With more shards than kv heads, each kv head is replicated over consecutive shards."""
    import torch

    rows = params.n_kv_heads * params.head_dim
    total = sum(p.shape[0] for p in parts)
    if total == rows:
        return parts
    repeat = total // rows
    if total % rows or len(parts) % repeat:
        raise ModelLoadError(
            Errors.E185.format(
                key=key,
                total=total,
                n_shards=len(parts),
                folder=str(shards.folder),
                n_kv_heads=params.n_kv_heads,
                head_dim=params.head_dim,
                rows=rows,
            )
        )
    kept = parts[::repeat]
    for i, part in enumerate(parts):
        if i % repeat == 0:
            continue
        if not torch.equal(part, kept[i // repeat]):
            raise ModelLoadError(
                Errors.E186.format(
                    key=key,
                    path=shards.files[i].name,
                    source=shards.files[i - i % repeat].name,
                    n_shards=len(parts),
                    n_kv_heads=params.n_kv_heads,
                )
            )
        drop_pages(part, shards.mapped)
    return kept


def _merge(
    parts: List[torch.Tensor],
    dim: Optional[int],
    dtype: Optional[torch.dtype],
    mapped: List[Tuple[int, int]],
) -> torch.Tensor:
    """Copy the parts into one new buffer (converting dtype on the way), then drop their pages."""
    import torch

    target = dtype or parts[0].dtype
    if dim is None:
        parts = parts[:1]
        dim = 0
    shape = list(parts[0].shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    out = torch.empty(shape, dtype=target)
    offset = 0
    for part in parts:
        out.narrow(dim, offset, part.shape[dim]).copy_(part)
        offset += part.shape[dim]
        drop_pages(part, mapped)
    return out


def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta interleaves rotary pairs (0,1),(2,3)...; transformers rotates halves."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def check_shapes(state: Dict[str, torch.Tensor], params: MetaParams, folder: Path) -> None:
    """The merged tensors must match params.json (FFN size computed as Meta does)."""
    q = params.n_heads * params.head_dim
    kv = params.n_kv_heads * params.head_dim
    vocab = state["model.embed_tokens.weight"].shape[0]
    expected = {
        "model.embed_tokens.weight": (
            params.vocab_size if params.vocab_size > 0 else vocab,
            params.dim,
        ),
        "model.layers.0.self_attn.q_proj.weight": (q, params.dim),
        "model.layers.0.self_attn.k_proj.weight": (kv, params.dim),
        "model.layers.0.self_attn.o_proj.weight": (params.dim, q),
        "model.layers.0.mlp.gate_proj.weight": (params.ffn_dim, params.dim),
        "model.layers.0.mlp.down_proj.weight": (params.dim, params.ffn_dim),
    }
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise ModelLoadError(
                Errors.E187.format(
                    key=key,
                    folder=str(folder),
                    got=got,
                    shape=shape,
                    dim=params.dim,
                    n_heads=params.n_heads,
                    n_kv_heads=params.n_kv_heads,
                    ffn_dim=params.ffn_dim,
                    multiple_of=params.multiple_of,
                    ffn_dim_multiplier=params.ffn_dim_multiplier,
                )
            )


def embedding_rows(shards: ShardSet, params: MetaParams) -> int:
    """The vocabulary size, from the shards' shapes alone (no tensor data is read)."""
    rows = int(shards.tensors[0]["tok_embeddings.weight"].shape[0])
    return rows * len(shards.files) if _embedding_dim(shards, params) == 0 else rows
