"""``spacy-llama.GGUF.v2``: a ``.gguf`` file read tensor by tensor, kept low-precision.

GGUF.v1 de-quantises the whole file to float and caches it as safetensors: an 8B ``Q4_K_M``
file (~5 GB) becomes ~32 GB of float32. Here nothing is converted or cached:

- the configuration and tokenizer come from the file's metadata (transformers reads them
  without touching the tensors);
- the transformers model is built on the ``meta`` device (no memory), then each tensor is read
  from the file on its own (``pread`` into a buffer, decoded, handed to its module, the
  buffer freed), so the peak is the kept weights plus one tensor;
- projections become :class:`~.qlinear.Int4Linear` / :class:`~.qlinear.Int8Linear` or stay
  float, as ``quantize`` says (``"auto"``: the file's own precision, ``gguf_blocks.KEPT``);
  the token embedding is int8 rows when the file stores it quantized, and a tied output head
  shares it.

The fused decoder, scoring, listener features and adapters all run on this model as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import Errors, ModelLoadError, Warnings
from ..registry import llama_models
from .base import DTypeName, LoadedModel
from .fingerprint import file_stamps, source_stamps
from .gguf import check_gguf_file, fix_special_tokens
from .gguf_blocks import INT4_TYPES, KEPT, Q, decode_float, decode_int4, expected_bytes, type_name
from .loading import cached_load, finish_model
from .memory import plan_gguf, release_freed_memory
from .qlinear import (
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    check_setting,
    int4_fits,
    quantize_rows_int8,
)

logger = logging.getLogger("spacy_llama")

QuantizeName = Optional[str]  # None | "auto" | "int8" | "int4"
QUANTIZE_CHOICES = (None, "auto", "int8", "int4")
FLOAT_SOURCE_CHOICES = (None, "int8", "int4")  # HF.v2 / Meta.v2: nothing to keep "as is"
STREAM_VERSION = 1  # part of the fingerprint: bump when what a tensor becomes changes
ROW_CHUNK = 4096  # rows de-quantised at a time on the way to int8

_LAYER_PARTS = {
    "attn_q": ("self_attn", "q_proj"),
    "attn_k": ("self_attn", "k_proj"),
    "attn_v": ("self_attn", "v_proj"),
    "attn_output": ("self_attn", "o_proj"),
    "ffn_gate": ("mlp", "gate_proj"),
    "ffn_up": ("mlp", "up_proj"),
    "ffn_down": ("mlp", "down_proj"),
}
_LAYER_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
ROPE_FACTORS = "rope_freqs.weight"  # Llama 3.1+: per-frequency divisors of the rotary angles


@llama_models("spacy-llama.GGUF.v2")
def gguf_model_v2(
    path: Union[str, Path],
    *,
    device: str = "cpu",
    dtype: DTypeName = "auto",
    quantize: QuantizeName = "auto",
) -> LoadedModel:
    """A LLaMA-architecture ``.gguf`` file with its weights kept quantized.

    ``quantize``: ``"auto"`` keeps each tensor at the file's precision (4-bit types as int4,
    5-8-bit types as int8, 16-bit as bf16); ``"int8"``/``"int4"`` put every projection in
    that form; ``null`` de-quantises to ``dtype`` (float, as GGUF.v1, without its cache).
    ``dtype`` is the activations' dtype (norms, attention, KV cache): ``auto`` is float32
    for quantized weights (batch-invariant; see ``memory.auto_activation_dtype``)."""
    file = check_gguf_file(path)
    check_setting(quantize, device, QUANTIZE_CHOICES)
    key = ("gguf-v2", str(file.resolve()), device, dtype, quantize)
    return cached_load(
        key,
        lambda: load_gguf_quantized(file, dtype=dtype, quantize=quantize),
        stamps=source_stamps(file),
    )


def load_gguf_quantized(
    file: Path, *, dtype: str = "auto", quantize: QuantizeName = "auto"
) -> LoadedModel:
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    stamps = file_stamps([file])
    try:
        reader = GGUFReader(str(file))
    except Exception as e:  # gguf-py raises ValueError/struct errors on a damaged header
        raise ModelLoadError(
            Errors.E154.format(path=str(file), error=f"{type(e).__name__}: {e}")
        ) from e
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelLoadError(Errors.E905.format(path=str(file), arch=arch))
    tensors = {t.name: t for t in reader.tensors}
    plan = plan_gguf(file, reader.tensors, quantize=quantize, dtype=dtype)
    logger.info(plan.describe())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with _one_reader(file, reader):
            config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            fix_special_tokens(tokenizer, file)
    except Exception as e:
        raise ModelLoadError(
            Errors.E154.format(path=str(file), error=f"{type(e).__name__}: {e}")
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    config.tie_word_embeddings = "output.weight" not in tensors
    config.torch_dtype = plan.dtype
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    builder = _Builder(model, config, plan.dtype, quantize, file)
    with open(file, "rb") as f:
        for name, tensor in tensors.items():
            if name == ROPE_FACTORS:
                builder.rope_factors = _float_tensor(name, tensor, _read(f, file, tensor), file)
                continue
            builder.add(name, tensor, _read(f, file, tensor))
            release_freed_memory()  # each tensor's buffers: the peak stays near what is kept
    builder.finish()
    del reader
    release_freed_memory()
    model.eval()
    return finish_model(
        model,
        tokenizer,
        name=file.stem,
        source=str(file),
        fingerprint_files=[file],
        extra_fingerprint=f"gguf-stream={STREAM_VERSION}/quantize={quantize}",
        loaded_stamps=stamps,
    )


@contextlib.contextmanager
def _one_reader(file: Path, reader: Any) -> Iterator[None]:
    """Parse the file's metadata once. transformers' config and tokenizer loaders and
    ``fix_special_tokens`` each build a ``gguf.GGUFReader`` of the file, and parsing the
    token arrays takes seconds per reader: for this file they get the one already built.
    (Called under ``cached_load``'s lock; other paths still get fresh readers.)"""
    import gguf

    real = gguf.GGUFReader
    target = os.path.realpath(file)

    def reuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and os.path.realpath(str(path)) == target:
            return reader
        return real(path, *args, **kwargs)

    gguf.GGUFReader = reuse  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader = real  # type: ignore[misc]


def _float_tensor(name: str, tensor: Any, raw: np.ndarray, file: Path) -> torch.Tensor:
    qtype = Q(int(tensor.tensor_type))
    shape = tuple(int(d) for d in reversed(tensor.shape))
    try:
        values = decode_float(raw, qtype, shape)
    except (NotImplementedError, ValueError, KeyError) as e:
        raise ModelLoadError(
            Errors.E906.format(tensor=name, type=qtype.name, path=str(file), reason=str(e))
        ) from e
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ModelLoadError(
            Errors.E906.format(tensor=name, type=qtype.name, path=str(file), reason="not positive")
        )
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(-1)


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", errors="replace")
    return value[0].item()


def _read(f: Any, file: Path, tensor: Any) -> np.ndarray:
    """The tensor's raw bytes, read on their own (not through the mmap: pages touched through
    a mapping stay in the RSS until it is dropped)."""
    qtype = Q(int(tensor.tensor_type))
    need = expected_bytes(qtype, int(tensor.n_elements))
    size = os.fstat(f.fileno()).st_size
    if int(tensor.n_bytes) != need or int(tensor.data_offset) + need > size:
        raise ModelLoadError(
            Errors.E906.format(
                tensor=tensor.name,
                type=qtype.name,
                path=str(file),
                reason=f"{need} bytes expected at offset {tensor.data_offset}, file has {size}",
            )
        )
    f.seek(int(tensor.data_offset))
    raw = np.frombuffer(f.read(need), dtype=np.uint8)
    if raw.size != need:  # pragma: no cover - the size check above catches truncation
        raise ModelLoadError(
            Errors.E906.format(
                tensor=tensor.name, type=qtype.name, path=str(file), reason="short read"
            )
        )
    return raw


class _Builder:
    """Hands each tensor to its module as it arrives."""

    def __init__(
        self, model: Any, config: Any, dtype: torch.dtype, quantize: QuantizeName, file: Path
    ):
        self.model, self.config, self.dtype, self.quantize, self.file = (
            model,
            config,
            dtype,
            quantize,
            file,
        )
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(config.num_key_value_heads or config.num_attention_heads)
        self.seen: Dict[str, bool] = {}
        self.rope_factors: Optional[torch.Tensor] = None

    def add(self, name: str, tensor: Any, raw: np.ndarray) -> None:
        qtype = Q(int(tensor.tensor_type))
        shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists ne0 (columns) first
        if qtype not in KEPT:
            self._check_decodable(name, qtype)
            message = Warnings.W900.format(tensor=name, type=qtype.name, path=str(self.file))
            warnings.warn(f"[spacy-llama] {message}", stacklevel=4)
        target = self._target(name)
        if target is None:
            raise ModelLoadError(Errors.E907.format(tensor=name, path=str(self.file)))
        owner, leaf, kind = target
        if kind == "projection":
            raw = self._unpermute(name, raw, shape, qtype)
            module = self._projection(name, raw, qtype, shape)
            setattr(owner, leaf, module)
        elif kind == "embedding":
            self._embedding(name, raw, qtype, shape)
        else:  # a norm: float, the model's dtype
            values = torch.from_numpy(self._float(name, raw, qtype, shape).copy())
            owner.weight = torch.nn.Parameter(values.to(self.dtype), requires_grad=False)
        self.seen[name] = True

    def _target(self, name: str) -> Optional[Tuple[Any, str, str]]:
        m = self.model
        if name == "token_embd.weight":
            return m.model, "embed_tokens", "embedding"
        if name == "output_norm.weight":
            return m.model.norm, "weight", "norm"
        if name == "output.weight":
            return m, "lm_head", "projection"
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight" or not parts[1].isdigit():
            return None
        layer_id = int(parts[1])
        if layer_id >= len(m.model.layers):
            return None
        layer = m.model.layers[layer_id]
        if parts[2] in _LAYER_PARTS:
            sub, leaf = _LAYER_PARTS[parts[2]]
            return getattr(layer, sub), leaf, "projection"
        if parts[2] in _LAYER_NORMS:
            return getattr(layer, _LAYER_NORMS[parts[2]]), "weight", "norm"
        return None

    def _unpermute(self, name: str, raw: np.ndarray, shape: tuple, qtype: Any) -> np.ndarray:
        """llama.cpp stores q/k rows permuted for its rotary layout (transformers undoes the
        same on de-quantised weights). Rows hold whole blocks, so the raw rows move as they are."""
        heads = self.n_heads if ".attn_q." in name else self.n_kv if ".attn_k." in name else 0
        if not heads:
            return raw
        rows = raw.reshape(shape[0], -1)
        half = shape[0] // heads // 2
        order = np.arange(shape[0]).reshape(heads, half, 2).swapaxes(1, 2).reshape(-1)
        return np.ascontiguousarray(rows[order]).reshape(-1)

    def _mode(self, qtype: Any) -> str:
        if self.quantize is None:
            return "float"
        if self.quantize in ("int8", "int4"):
            return self.quantize
        kept = KEPT.get(qtype)
        if kept in ("int4", "int8"):
            return kept
        return "float"

    def _projection(self, name: str, raw: np.ndarray, qtype: Any, shape: tuple) -> torch.nn.Module:
        mode = self._mode(qtype)
        n, k = shape
        if mode == "int4" and int4_fits(n, k):
            if qtype in INT4_TYPES:
                groups = decode_int4(raw, qtype, shape)
                self._check_finite(name, qtype, groups.scale, groups.zero)
                return Int4Linear.from_groups(groups.q, groups.scale, groups.zero)
            return Int4Linear.from_float(torch.from_numpy(self._float(name, raw, qtype, shape)))
        if mode in ("int4", "int8"):
            return Int8Linear(*self._int8_rows(name, raw, qtype, shape))
        weight = torch.from_numpy(self._float(name, raw, qtype, shape))
        linear = torch.nn.Linear(k, n, bias=False, device="cpu", dtype=self.dtype)
        linear.weight = torch.nn.Parameter(weight.to(self.dtype), requires_grad=False)
        return linear

    def _embedding(self, name: str, raw: np.ndarray, qtype: Any, shape: tuple) -> None:
        inner = self.model.model
        if self._mode(qtype) == "float":
            weight = torch.from_numpy(self._float(name, raw, qtype, shape))
            emb = torch.nn.Embedding(shape[0], shape[1], device="cpu", dtype=self.dtype)
            emb.weight = torch.nn.Parameter(weight.to(self.dtype), requires_grad=False)
            inner.embed_tokens = emb
            if self.config.tie_word_embeddings:
                head = torch.nn.Linear(
                    shape[1], shape[0], bias=False, device="cpu", dtype=self.dtype
                )
                head.weight = emb.weight
                self.model.lm_head = head
            return
        q, scale = self._int8_rows(name, raw, qtype, shape)
        emb8 = Int8Embedding(q, scale, self.dtype)
        inner.embed_tokens = emb8
        if self.config.tie_word_embeddings:
            self.model.lm_head = emb8.head()

    def _int8_rows(
        self, name: str, raw: np.ndarray, qtype: Any, shape: tuple
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """int8 rows and their scales, decoded ``ROW_CHUNK`` rows at a time: an 8B model's
        embedding in float32 alone is 2 GiB, and decoding it whole held two such copies."""
        n, k = shape
        rows = raw.reshape(n, -1)
        q = torch.empty((n, k), dtype=torch.int8)
        scale = torch.empty(n, dtype=torch.float32)
        for start in range(0, n, ROW_CHUNK):
            part = rows[start : start + ROW_CHUNK]
            values = self._float(name, part.reshape(-1), qtype, (part.shape[0], k))
            q_part, s_part = quantize_rows_int8(torch.from_numpy(values))
            q[start : start + part.shape[0]] = q_part
            scale[start : start + part.shape[0]] = s_part
        return q, scale

    def _float(self, name: str, raw: np.ndarray, qtype: Any, shape: tuple) -> np.ndarray:
        try:
            values = decode_float(raw, qtype, shape)
        except (NotImplementedError, ValueError, KeyError) as e:
            raise ModelLoadError(
                Errors.E906.format(
                    tensor=name, type=type_name(qtype), path=str(self.file), reason=str(e)
                )
            ) from e
        if not np.isfinite(values).all():
            raise ModelLoadError(
                Errors.E906.format(
                    tensor=name, type=qtype.name, path=str(self.file), reason="non-finite values"
                )
            )
        return values

    def _check_finite(self, name: str, qtype: Any, *arrays: np.ndarray) -> None:
        if not all(np.isfinite(a).all() for a in arrays):
            raise ModelLoadError(
                Errors.E906.format(
                    tensor=name, type=qtype.name, path=str(self.file), reason="non-finite scales"
                )
            )

    def _check_decodable(self, name: str, qtype: Any) -> None:
        from gguf.quants import _type_traits  # the decoders gguf-py has

        if qtype not in _type_traits:
            supported = ", ".join(sorted(t.name for t in KEPT))
            raise ModelLoadError(
                Errors.E908.format(
                    tensor=name, type=qtype.name, path=str(self.file), supported=supported
                )
            )

    def finish(self) -> None:
        finish_skeleton(self.model, self.config, str(self.file))
        if self.rope_factors is not None:
            # llama.cpp's frequency factors (Llama 3.1's rope scaling, which transformers'
            # GGUF config reader does not carry over): theta_i = pos * inv_freq_i / factor_i
            rotary = self.model.model.rotary_emb
            rotary.inv_freq = rotary.inv_freq / self.rope_factors.to(rotary.inv_freq.dtype)
            rotary.original_inv_freq = rotary.inv_freq


def finish_skeleton(model: Any, config: Any, source: str) -> None:
    """A model built on the ``meta`` device and filled tensor by tensor: the rotary tables
    are rebuilt on the CPU, and every weight must have arrived."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model.model.rotary_emb = LlamaRotaryEmbedding(config=config, device=torch.device("cpu"))
    missing = sorted(
        {name.rsplit(".", 1)[0] for name, t in _tensors_of(model) if t.device.type == "meta"}
    )
    if missing:
        raise ModelLoadError(
            Errors.E909.format(path=source, modules=", ".join(missing[:8]), count=len(missing))
        )
    model.eval()


def _tensors_of(model: Any) -> Iterator[Tuple[str, torch.Tensor]]:
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)
