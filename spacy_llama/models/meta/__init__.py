"""``spacy-llama.Meta.v1``: Meta's own checkpoint folders (``consolidated.NN.pth``).

A Meta download holds model-parallel shards (``consolidated.00.pth``, ``.01.pth``...), a
``params.json`` and a ``tokenizer.model``. Meta's reference code needs ``torchrun`` with one
process per shard; we merge the shards in one process instead, apply the rotary permutation
transformers expects for q/k, and hand the tensors to a ``LlamaForCausalLM`` built without
allocating weights of its own. No torch.distributed, fairscale or torchrun on this path.

Memory: shards are opened with ``mmap=True`` (nothing is read up front) and each merged tensor
is written into one fresh buffer; the source pages are then dropped from our address space, so
the peak stays near one copy of the weights (see benchmarks/meta_load_memory.py).

One module per step: ``params`` (params.json), ``shards`` (finding, opening and checking
the shards), ``merge`` (shards -> transformers' state dict), ``paging`` (releasing the
shards' pages), ``tokenizer`` and ``loader`` (putting it together). This module registers
the loader and re-exports the names other code imports from ``spacy_llama.models.meta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ...registry import llama_models
from ..base import DTypeName, LoadedModel
from ..fingerprint import source_stamps
from ..loading import cached_load
from .loader import (
    MetaCheckpoint,
    assemble,
    build_meta,
    convert_meta,
    hf_config,
    load_meta_folder,
)
from .merge import check_shapes, merge_shards, permute_rotary
from .paging import drop_pages, file_mappings
from .params import CONTEXT_LENGTHS, MetaParams, read_params
from .shards import ShardSet, check_meta_folder, check_shards, load_shard, shard_files
from .tokenizer import check_vocab, load_tokenizer, tokenizer_files

__all__ = [
    "CONTEXT_LENGTHS",
    "MetaCheckpoint",
    "MetaParams",
    "ShardSet",
    "assemble",
    "build_meta",
    "check_meta_folder",
    "check_shapes",
    "check_shards",
    "check_vocab",
    "convert_meta",
    "drop_pages",
    "file_mappings",
    "hf_config",
    "load_meta_folder",
    "load_shard",
    "load_tokenizer",
    "merge_shards",
    "meta_model_v1",
    "meta_model_v2",
    "permute_rotary",
    "read_params",
    "shard_files",
    "tokenizer_files",
]


@llama_models("spacy-llama.Meta.v1")
def meta_model_v1(
    path: Union[str, Path],
    *,
    tokenizer_path: Optional[Union[str, Path]] = None,
    device: str = "auto",
    dtype: DTypeName = "auto",
    device_map: Optional[str] = None,
    context_length: Optional[int] = None,
) -> LoadedModel:
    """Load a Meta LLaMA checkpoint folder (Llama 1, 2, 3, 3.1, 3.2, Code Llama)."""
    folder = check_meta_folder(path)
    tok = Path(tokenizer_path).expanduser() if tokenizer_path is not None else None
    key = ("meta", str(folder.resolve()), str(tok), device, dtype, device_map, context_length)
    return cached_load(
        key,
        lambda: load_meta_folder(
            folder,
            tokenizer_path=tok,
            device=device,
            dtype=dtype,
            device_map=device_map,
            context_length=context_length,
        ),
        stamps=source_stamps(folder, tok),
    )


@llama_models("spacy-llama.Meta.v2")
def meta_model_v2(
    path: Union[str, Path],
    *,
    tokenizer_path: Optional[Union[str, Path]] = None,
    device: str = "cpu",
    dtype: DTypeName = "auto",
    quantize: Optional[str] = None,
    context_length: Optional[int] = None,
) -> LoadedModel:
    """A Meta checkpoint folder with ``quantize = null | "int8" | "int4"``: each merged
    tensor is kept in that form as it is made (the float copy is dropped). ``dtype`` is the
    activations' (and float weights') dtype; ``auto`` is float32."""
    from ..gguf_stream import FLOAT_SOURCE_CHOICES
    from ..loading import finish_model
    from ..memory import auto_activation_dtype, dtype_from_name
    from ..qlinear import check_setting
    from .loader import build_meta_quantized

    folder = check_meta_folder(path)
    check_setting(quantize, device, FLOAT_SOURCE_CHOICES)
    act = auto_activation_dtype() if dtype == "auto" else dtype_from_name(dtype)
    tok = Path(tokenizer_path).expanduser() if tokenizer_path is not None else None

    def load() -> LoadedModel:
        ckpt = build_meta_quantized(
            folder, tokenizer_path=tok, quantize=quantize, dtype=act, context_length=context_length
        )
        return finish_model(
            ckpt.model,
            ckpt.tokenizer,
            name=folder.name,
            source=str(folder),
            fingerprint_files=ckpt.files,
            extra_stop_ids=ckpt.stop_ids,
            extra_fingerprint=f"meta-stream=1/quantize={quantize}",
        )

    key = ("meta-v2", str(folder.resolve()), str(tok), dtype, quantize, context_length)
    return cached_load(key, load, stamps=source_stamps(folder, tok))
