"""``spacy-llama.HF.v2``: a Hugging Face LLaMA folder, tensor by tensor, optionally quantized.

``HF.v1`` loads the whole model in float through ``from_pretrained`` (a 1.7B model: ~7 GiB
in float32, plus the int8 copies ``quantize = "int8"`` made beside them). Here the model is
built on the ``meta`` device and each safetensors tensor is read on its own (memory-mapped),
turned into what ``quantize`` asks for (:mod:`.qlinear`), and dropped: the float copy of a
quantized projection never exists for more than one tensor at a time.

``dtype = "auto"`` decides by size and machine (see :func:`choose`): float32 while its weights
take at most half the available memory, bf16 where the CPU runs it natively and it fits,
int8 projections otherwise; the choice is logged. An explicit ``dtype`` or ``quantize`` wins.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from ..errors import Errors, ModelLoadError
from ..registry import llama_models
from .base import DTypeName, LoadedModel
from .cpu_features import cpu_features
from .fingerprint import file_stamps, hf_inputs, source_stamps
from .gguf_stream import FLOAT_SOURCE_CHOICES, finish_skeleton
from .hf import check_hf_folder
from .loading import cached_load, finish_model, weight_files
from .memory import (
    FP32_SHARE,
    HEADROOM,
    MemoryPlan,
    auto_activation_dtype,
    available_memory,
    check_fits,
    dtype_from_name,
    human,
    projection_bytes,
    release_freed_memory,
)
from .qlinear import Int8Embedding, check_setting, quantize_rows_int8, quantized_linear

logger = logging.getLogger("spacy_llama")

_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STREAM_VERSION = 1


@llama_models("spacy-llama.HF.v2")
def hf_model_v2(
    path: Union[str, Path],
    *,
    tokenizer_path: Optional[Union[str, Path]] = None,
    device: str = "cpu",
    dtype: DTypeName = "auto",
    quantize: Optional[str] = None,
) -> LoadedModel:
    """A local LlamaForCausalLM folder (safetensors), read tensor by tensor.

    ``quantize``: ``null`` (float weights; ``dtype = "auto"`` may still choose int8 when float
    does not fit), ``"int8"`` (per-channel) or ``"int4"`` (groups of 32)."""
    folder = check_hf_folder(path)
    check_setting(quantize, device, FLOAT_SOURCE_CHOICES)
    tok_folder = Path(tokenizer_path) if tokenizer_path is not None else folder
    key = ("hf-v2", str(folder.resolve()), str(tok_folder), dtype, quantize)
    return cached_load(
        key,
        lambda: load_hf_streaming(folder, tok_folder, dtype=dtype, quantize=quantize),
        stamps=source_stamps(folder, tok_folder if tokenizer_path is not None else None),
    )


def count_weights(folder: Path) -> Dict[str, int]:
    """Each tensor's element count, from the safetensors headers (nothing is read)."""
    from safetensors import safe_open

    sizes: Dict[str, int] = {}
    for file in _safetensors(folder):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                n = 1
                for d in shape:
                    n *= int(d)
                sizes[name] = n
    return sizes


def _safetensors(folder: Path) -> List[Path]:
    files = [p for p in weight_files(folder) if p.suffix == ".safetensors"]
    if not files:
        found = sorted(p.name for p in weight_files(folder))
        raise ModelLoadError(Errors.E910.format(path=str(folder), found=found))
    return files


def _need(sizes: Dict[str, int], mode: str) -> float:
    """Bytes of the weights when projections are ``mode`` (norms and, unquantized, the
    embedding stay float; a quantized model keeps its embedding as int8 rows)."""
    total = 0.0
    float_mode = mode if mode in ("float32", "bfloat16") else "bfloat16"
    for name, n in sizes.items():
        leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
        if leaf in _PROJECTIONS or leaf == "lm_head" or leaf == "embed_tokens":
            total += projection_bytes(n, mode)
        else:
            total += projection_bytes(n, float_mode)
    return total


def choose(
    sizes: Dict[str, int], dtype: str, quantize: Optional[str], source: str
) -> Tuple[torch.dtype, Optional[str], str, float]:
    """(activation dtype, projection quantization, what was chosen, weight bytes)."""
    free = available_memory()
    if quantize is not None:
        act = auto_activation_dtype() if dtype == "auto" else dtype_from_name(dtype)
        return act, quantize, f"quantize = {quantize!r} (set)", _need(sizes, quantize)
    if dtype != "auto":
        return dtype_from_name(dtype), None, f"dtype = {dtype!r} (set)", _need(sizes, dtype)
    usable = free - HEADROOM
    fp32 = _need(sizes, "float32")
    if fp32 <= usable * FP32_SHARE:
        return torch.float32, None, "float32 (fits comfortably)", fp32
    bf16 = _need(sizes, "bfloat16")
    if cpu_features().onednn_bf16 and bf16 <= usable * 0.8:
        return torch.bfloat16, None, "bfloat16 (float32 would take over half the memory)", bf16
    why = "float32 would take over half the memory" + (
        "" if cpu_features().onednn_bf16 else ", and this CPU has no native bf16"
    )
    return auto_activation_dtype(), "int8", f"int8 projections ({why})", _need(sizes, "int8")


def load_hf_streaming(
    folder: Path, tok_folder: Path, *, dtype: str = "auto", quantize: Optional[str] = None
) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    fingerprint_files = hf_inputs(folder, tok_folder)
    stamps = file_stamps(fingerprint_files)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if getattr(config, "model_type", None) != "llama":
        raise ModelLoadError(
            Errors.E911.format(path=str(folder), model_type=getattr(config, "model_type", None))
        )
    sizes = count_weights(folder)
    act, mode, why, need = choose(sizes, dtype, quantize, str(folder))
    setting = f"quantize = {mode!r}" if mode else f'dtype = "{str(act).replace("torch.", "")}"'
    options = [(f"quantize = {q!r}", _need(sizes, q)) for q in ("int4", "int8")]
    options += [(f'dtype = "{d}"', _need(sizes, d)) for d in ("bfloat16", "float32")]
    check_fits(str(folder), need, setting, [o for o in options if o[0] != setting])
    plan = MemoryPlan(str(folder), why, act, need, available_memory())
    logger.info(plan.describe())
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_folder), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(Errors.E451.format(path=str(tok_folder), error=e)) from e
    config.torch_dtype = act
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    names = set(sizes)
    tied = bool(getattr(config, "tie_word_embeddings", False)) or "lm_head.weight" not in names
    for name, tensor in _tensors(folder):
        put_tensor(model, name, tensor, act, mode, tied)
    finish_skeleton(model, config, str(folder))
    release_freed_memory()
    return finish_model(
        model,
        tokenizer,
        name=folder.name,
        source=str(folder),
        fingerprint_files=fingerprint_files,
        extra_fingerprint=f"hf-stream={STREAM_VERSION}/quantize={mode}",
        loaded_stamps=stamps,
    )


def _tensors(folder: Path) -> Iterator[Tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in _safetensors(folder):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def put_tensor(
    model: Any, name: str, tensor: torch.Tensor, act: torch.dtype, mode: Optional[str], tied: bool
) -> None:
    """Put one checkpoint tensor into the meta-device model, in the form it is kept."""
    if not torch.isfinite(tensor).all():
        raise ModelLoadError(Errors.E912.format(tensor=name))
    owner_path, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return  # e.g. rotary inv_freq of old checkpoints: rebuilt from the config
    owner = model.get_submodule(owner_path)
    module_name = owner_path.rsplit(".", 1)[-1]
    parent_path = owner_path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    if module_name in _PROJECTIONS or module_name == "lm_head":
        if mode is not None:
            new: torch.nn.Module = quantized_linear(tensor, mode)
        else:
            new = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=False, device="cpu")
            new.weight = torch.nn.Parameter(tensor.to(act), requires_grad=False)
        setattr(parent, module_name, new)
    elif module_name == "embed_tokens":
        if mode is not None:
            q, scale = quantize_rows_int8(tensor)
            emb = Int8Embedding(q, scale, act)
            parent.embed_tokens = emb
            if tied:
                model.lm_head = emb.head()
        else:
            weight = torch.nn.Parameter(tensor.to(act), requires_grad=False)
            parent.embed_tokens = torch.nn.Embedding(
                tensor.shape[0], tensor.shape[1], device="cpu", dtype=act
            )
            parent.embed_tokens.weight = weight
            if tied:
                head = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=False, device="cpu")
                head.weight = weight
                model.lm_head = head
    else:  # norms
        owner.weight = torch.nn.Parameter(tensor.to(act), requires_grad=False)


__all__ = ["hf_model_v2", "choose", "count_weights", "human", "put_tensor"]
