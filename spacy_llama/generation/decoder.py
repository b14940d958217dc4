"""An inference-only forward pass over a transformers LLaMA model's own weights.

Why not ``model(...)`` with a ``DynamicCache``? On a CPU the decode step of a small model is
dominated by overheads that this file removes, without changing the arithmetic:
- a preallocated KV cache with one *slot* per batch row (no ``torch.cat`` of the whole cache
  each step, and a finished row's slot is reused at once for the next prompt: refill);
- grouped-query attention without ``repeat_kv`` copies: the query heads that share a KV head
  are folded into the query-length dimension of one SDPA call;
- fused q/k/v and gate/up projections (one GEMM instead of three, one instead of two); the
  module weights become views of the fused tensors, so memory does not grow and the
  transformers model keeps working; engines share one FastLlama per model
  (``fused_decoder``), so a second pipeline on a cached model adds no copies either;
- logits only for the positions that choose a token;
- on CPUs with oneDNN, the projection weights are repacked once into oneDNN's blocked layout
  (``torch.ops.mkldnn``): at the small row counts of decoding (one row per sequence) those
  GEMMs run 1.3-2.4x faster than ``F.linear`` on the plain weights. This keeps a second,
  packed copy of the projection weights, so it is only done up to ``PREPACK_MAX_BYTES``,
  and bf16 weights only where oneDNN has a bf16 path (``models/cpu_features.py``).
Norms, rotary embeddings and activations are the model's own modules, so the numbers are
those of transformers up to the order of floating-point sums.

Why this forward path exists (docs/architecture.md lists the three): it is the fast one,
inference only. It cannot serve training (no autograd graph, and peft's LoRA layers sit in
the transformers modules it bypasses) nor the listener features (its SDPA is not
batch-invariant on CPU, and it keeps no per-layer hidden states); those run transformers'
own forward through ``rows.forward_after``.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ..errors import Errors, ModelLoadError
from ..models import qlinear
from ..models.cpu_features import cpu_features
from ..models.memory import release_freed_memory
from ..models.qlinear import dense_rows

PREPACK_MAX_BYTES = 4 << 30
_SHARED_ATTR = "_spacy_llama_fused_decoders"  # on the transformers model: see fused_decoder
_SHARED_LOCK = threading.Lock()


def can_prepack(model: Any) -> bool:
    """oneDNN prepacking: CPU only, and only while a packed copy of the weights is cheap.
    bf16 only where oneDNN has a bf16 path: elsewhere ``_reorder_linear_weight`` raises
    ("bf16 path needs the cpu support avx_ne_convert or avx512bw, ...") and plain weights
    (``F.linear``) are what works."""
    param = next(model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    ops = getattr(torch.ops, "mkldnn", None)
    bf16 = param.dtype == torch.bfloat16 and cpu_features().onednn_bf16
    return (
        param.device.type == "cpu"
        and (param.dtype == torch.float32 or bf16)
        and size <= PREPACK_MAX_BYTES
        and torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


class Projection:
    """``x @ weight.T``: plain, prepacked for oneDNN, or int8 (``quantize = "int8"``)."""

    def __init__(self, weight: torch.Tensor, *, prepack: bool, int8: bool = False) -> None:
        self.weight = weight
        self.int8 = Int8Weight(weight) if int8 else None
        self.packed = (
            torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 32)
            if prepack and not int8
            else None
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is not None:
            return self.int8(x)
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return F.linear(x, self.weight)


class Int8Weight:
    """W8A8: int8 weights with one scale per output channel, activations quantized to int8
    with one scale per *row* (token) at each call, an int8 x int8 -> int32 GEMM
    (``torch._int_mm``, VNNI on x86), then both scales.

    Why per row: a token with a large activation no longer flattens every other row of the
    batch to a few int8 levels, as one scale per tensor (fbgemm's dynamic linear) does. On
    SmolLM2-135M per-tensor scales turned summaries into lists of entity labels; per-row
    scales keep them summaries (benchmarks/README.md)."""

    def __init__(self, weight: torch.Tensor) -> None:
        w = weight.detach().float()
        self.scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (out,)
        # (in, out) as the transpose of a contiguous (out, in): the layout _int_mm packs fastest
        self.q = torch.round(w / self.scale[:, None]).to(torch.int8).t()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # float32: in bf16 the rounded scale can send the largest value to 128, which wraps
        rows = x.reshape(-1, x.shape[-1]).float()
        amax = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True)
        s = amax.clamp_(min=1e-12).div_(127.0)
        xq = torch.div(rows, s).round_().to(torch.int8)
        y = torch._int_mm(xq, self.q).float().mul_(s).mul_(self.scale)
        return y.to(x.dtype).reshape(*x.shape[:-1], -1)


def check_int8(model: Any) -> None:
    """int8 needs float32 weights on a CPU whose torch has the int8 GEMM."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise ModelLoadError(Errors.E400.format(dtype=param.dtype, device=param.device))
    try:
        torch._int_mm(torch.ones(17, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
    except (AttributeError, RuntimeError) as exc:
        raise ModelLoadError(Errors.E401.format(version=torch.__version__, error=exc)) from exc


def supports_fast_decoder(model: Any) -> bool:
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) == "llama"
        and not getattr(model, "hf_device_map", None)
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and hasattr(getattr(model, "model", None), "layers")
    )


def fused_decoder(model: Any, *, prepack: bool, quantize: Optional[str] = None) -> FastLlama:
    """The one FastLlama of ``model`` at its dtype and device, with this prepacking and
    quantization: every Engine and pipeline on a shared (cached) model uses it instead of
    fusing and packing its own copy of the weights.

    It is kept in an attribute of the model, so it goes when the model goes (a reference
    cycle, freed by the garbage collector). A WeakKeyDictionary keyed on the model would keep
    both forever: the FastLlama refers to its model."""
    param = next(model.parameters())
    key = (param.dtype, param.device, prepack, quantize)
    with _SHARED_LOCK:
        decoders: Dict[Any, FastLlama] = vars(model).setdefault(_SHARED_ATTR, {})
        if key not in decoders:
            decoders[key] = FastLlama(model, prepack=prepack, quantize=quantize)
        return decoders[key]


def drop_fused_decoders(model: Any) -> None:
    """Forget the fused decoders of ``model``: its weights changed (trained adapters were
    merged into them), so the next ``fused_decoder`` call fuses and packs them again."""
    with _SHARED_LOCK:
        vars(model).pop(_SHARED_ATTR, None)


class ModuleProjection:
    """Projections whose weights are neither a float matrix nor quantized layers that fuse
    (LoRA-wrapped layers, mixed kinds): each module runs its own kernel, the outputs are
    concatenated."""

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.modules = list(modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.modules) == 1:
            return self.modules[0](x)
        return torch.cat([m(x) for m in self.modules], dim=-1)


def _project(linears: Sequence[Any], pack: bool, int8: bool) -> Any:
    """One projection over ``linears``: fused float weights, fused quantized layers (the
    same memory, ``qlinear.fuse``), or their own modules."""
    if all(type(lin) is torch.nn.Linear for lin in linears):
        weight = _fuse(linears) if len(linears) > 1 else linears[0].weight
        return Projection(weight, prepack=pack, int8=int8)
    fused = qlinear.fuse(linears)
    return fused if fused is not None else ModuleProjection(linears)


def _fuse(linears: Sequence[torch.nn.Linear]) -> torch.Tensor:
    """Concatenate Linear weights along the output dim; make each Linear a view of it.
    Weights that are already consecutive views of one tensor (an earlier FastLlama fused
    them) are that tensor: no second copy."""
    weights = [lin.weight.data for lin in linears]
    done = _fused_view(weights)
    if done is not None:
        return done
    fused = torch.cat(weights, dim=0).contiguous()
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = fused[start : start + rows]
        start += rows
    return fused


def _fused_view(weights: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """The (sum of rows, cols) tensor whose consecutive rows ``weights`` are, if they are."""
    first = weights[0]
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for w in weights:
        if not (
            w.is_contiguous()
            and w.untyped_storage().data_ptr() == storage
            and w.storage_offset() == offset
            and w.shape[1:] == first.shape[1:]
        ):
            return None
        offset += w.numel()
    rows, cols = sum(w.shape[0] for w in weights), first.shape[1]
    return first.as_strided((rows, cols), (cols, 1))


class KVCache:
    """Keys and values for ``slots`` sequences of up to ``capacity`` positions each."""

    def __init__(self, model: FastLlama, slots: int, capacity: int) -> None:
        shape = (model.n_layers, slots, model.n_kv, capacity, model.head_dim)
        # zeros, not empty: masked keys get probability 0, but 0 * NaN garbage is NaN
        self.k = torch.zeros(shape, dtype=model.dtype, device=model.device)
        self.v = torch.zeros(shape, dtype=model.dtype, device=model.device)
        self.capacity = capacity

    def move(self, src: int, dst: int) -> None:
        """Copy slot ``src`` into slot ``dst`` (compacts the live rows to a prefix)."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]


class FastLlama:
    def __init__(
        self, model: Any, *, prepack: Optional[bool] = None, quantize: Optional[str] = None
    ) -> None:
        if quantize is not None:
            check_int8(model)
        self.hf = model
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.group = self.n_heads // self.n_kv
        self.scale = self.head_dim**-0.5
        param = next(model.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.layers = list(model.model.layers)
        self.prepacked = can_prepack(model) if prepack is None else prepack
        pack = self.prepacked
        int8 = quantize == "int8"
        self.quantize = quantize
        self.qkv: List[Any] = []  # Projection or ModuleProjection
        self.o: List[Any] = []
        self.gate_up: List[Any] = []
        self.down: List[Any] = []
        for layer in self.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.qkv.append(_project([att.q_proj, att.k_proj, att.v_proj], pack, int8))
            self.o.append(_project([att.o_proj], pack, int8))
            self.gate_up.append(_project([mlp.gate_proj, mlp.up_proj], pack, int8))
            self.down.append(_project([mlp.down_proj], pack, int8))
        if any(isinstance(p, qlinear.Int4Linear | qlinear.Int8Linear) for p in self.qkv):
            # fusing copied the layers' tensors and freed the originals: glibc keeps freed
            # heap for reuse, so hand it back (~0.2 GiB of RSS at the 1.7B shape)
            release_freed_memory()
        # A float output head stays in float: its logits are the log-probabilities we report
        # (a quantized model's head is what its file holds).
        self.lm_head = _project([model.lm_head], pack, False)
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv * self.head_dim
        self.inter = int(self.layers[0].mlp.gate_proj.out_features)

    def new_cache(self, slots: int, capacity: int) -> KVCache:
        return KVCache(self, slots, capacity)

    def prefix(self, ids: Sequence[int], cache: KVCache, slot: int) -> None:
        """Fill positions [0, len(ids)) of one slot (the shared prompt prefix)."""
        x = torch.tensor([list(ids)], device=self.device)
        self.prefill(x, torch.tensor([len(ids)]), cache, torch.tensor([slot]), start=0)

    @torch.inference_mode()
    def prefill(
        self,
        ids: torch.Tensor,  # (n, T) right-padded suffixes
        lengths: torch.Tensor,  # (n,) real suffix lengths
        cache: KVCache,
        slots: torch.Tensor,  # (n,) consecutive slots, one per row
        *,
        start: int,  # cache positions [0, start) already hold the shared prefix
    ) -> torch.Tensor:
        """Run the suffixes, write their keys/values, return each row's last-token logits."""
        n, T = ids.shape
        positions, mask = self._prefill_mask(n, T, lengths, start)
        first = int(slots[0])
        if slots.tolist() != list(range(first, first + n)):
            raise ValueError(f"prefill writes consecutive slots; got {slots.tolist()}")
        with dense_rows("dense"):  # prompt rows: quantized layers de-quantise once per call
            h = self._run(ids, positions, mask, cache, first, start)
        last = h[torch.arange(n, device=self.device), (lengths - 1).to(self.device)]
        with dense_rows("kernel"):
            return self.lm_head(self.hf.model.norm(last))

    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden state of every position of right-padded rows, (n, T, dim).
        No KV cache: each layer's keys and values are dropped once the layer is done."""
        n, T = ids.shape
        positions, mask = self._prefill_mask(n, T, lengths, 0)
        with dense_rows("dense"):
            return self.hf.model.norm(self._run(ids, positions, mask, None, None, 0))

    def _prefill_mask(
        self, n: int, T: int, lengths: torch.Tensor, start: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positions (n, T) and the causal mask over the cached prefix plus each row's own
        keys (n, 1, T, start + T)."""
        positions = torch.arange(start, start + T, device=self.device).expand(n, T)
        keys = torch.arange(start + T, device=self.device)
        qpos = positions[0]
        causal = keys[None, :] <= qpos[:, None]  # (T, S)
        real = keys[None, :] < (start + lengths.to(self.device))[:, None]  # (n, S)
        mask = causal[None] & real[:, None, :]
        mask |= keys[None, None, :] == qpos[None, :, None]  # pad queries see themselves: no NaN
        return positions, mask[:, None]

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token for each of the first ``n`` slots; ``lengths[i]`` keys already cached."""
        return self.verify(tokens[:, None], lengths, cache)[:, 0]

    @torch.inference_mode()
    def verify(self, tokens: torch.Tensor, lengths: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """``T`` tokens for each of the first ``n`` slots at once (the last chosen token and
        up to ``T - 1`` drafted ones, right-padded); returns the logits of every position,
        (n, T, vocab). Keys past a row's accepted tokens are stale but never read: a query
        only sees keys at or before its own position, and they are overwritten first."""
        n, T = tokens.shape
        lengths = lengths.to(self.device)
        positions = lengths[:, None] + torch.arange(T, device=self.device)[None, :]
        keys = torch.arange(int(lengths.max()) + T, device=self.device)
        mask = (keys[None, None, :] <= positions[:, :, None])[:, None]  # (n, 1, T, S)
        with dense_rows("kernel"):  # generated rows: the kernel, whatever the batch
            h = self._run(tokens, positions, mask, cache, None, 0)
            return self.lm_head(self.hf.model.norm(h))

    def _run(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: Optional[KVCache],  # None: a plain forward pass, keys/values not kept
        first_slot: Optional[int],  # prefill: rows go to slots first_slot..; decode: None
        start: int,
    ) -> torch.Tensor:
        n, T = ids.shape
        x = self.hf.model.embed_tokens(ids)
        cos, sin = self.hf.model.rotary_emb(x, positions)
        rows = torch.arange(n, device=self.device)
        for li, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            qkv = self.qkv[li](h)
            q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q = q.view(n, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if cache is None:
                kc, vc = k, v
            else:
                kc, vc = self._store(cache, li, k, v, positions, first_slot, start, rows)
            attn = self._attend(q, kc, vc, mask)
            x = x + self.o[li](attn)
            h = layer.post_attention_layernorm(x)
            gu = self.gate_up[li](h)
            gate, up = gu.split([self.inter, self.inter], dim=-1)
            x = x + self.down[li](layer.mlp.act_fn(gate) * up)
        return x

    def _store(
        self,
        cache: KVCache,
        li: int,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        first_slot: Optional[int],
        start: int,
        rows: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        n, _, T, _ = k.shape
        if first_slot is None:  # decode/verify: slots 0..n-1, T new keys each from its length
            # index_copy_ on a flat view: advanced-index assignment is several times slower
            cap = cache.capacity
            width = int(positions.max()) + 1
            if width > cap:  # a flat write past a slot's end would land in the next one
                raise RuntimeError(f"KV cache overflow: position {width - 1} >= capacity {cap}")
            heads = torch.arange(self.n_kv, device=self.device)
            flat = (
                (rows[:, None, None] * self.n_kv + heads[None, :, None]) * cap
                + positions[:, None, :]
            ).reshape(-1)  # (n, kv, T) order, as k/v below
            cache.k[li].view(-1, self.head_dim).index_copy_(0, flat, k.reshape(-1, self.head_dim))
            cache.v[li].view(-1, self.head_dim).index_copy_(0, flat, v.reshape(-1, self.head_dim))
            return cache.k[li, :n, :, :width], cache.v[li, :n, :, :width]
        end, s0 = start + T, first_slot
        cache.k[li, s0 : s0 + n, :, start:end] = k
        cache.v[li, s0 : s0 + n, :, start:end] = v
        return cache.k[li, s0 : s0 + n, :, :end], cache.v[li, s0 : s0 + n, :, :end]

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """SDPA with the ``group`` query heads of each KV head folded into the query axis."""
        n, _, T, d = q.shape
        g = self.group
        qf = q.reshape(n, self.n_kv, g * T, d)
        m = mask.expand(n, 1, T, mask.shape[-1])
        if g > 1:
            m = m[:, :, None].expand(n, 1, g, T, m.shape[-1]).reshape(n, 1, g * T, m.shape[-1])
        out = F.scaled_dot_product_attention(qf, k, v, attn_mask=m, scale=self.scale)
        return out.view(n, self.n_heads, T, d).transpose(1, 2).reshape(n, T, self.n_heads * d)
