"""Putting it together: params, shards and tokenizer into a ``LlamaForCausalLM``, then
onto a device (or into a Hugging Face folder)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ...errors import Errors, ModelLoadError
from ..base import LoadedModel
from ..fingerprint import TOKENIZER_PATTERNS, folder_inputs
from ..loading import finish_model, load_hf_folder
from .merge import embedding_rows, merge_shards
from .paging import file_mappings
from .params import CONTEXT_LENGTHS, MetaParams, read_params
from .shards import ShardSet, check_meta_folder, check_shards, load_shard, shard_files
from .tokenizer import check_vocab, load_tokenizer, tokenizer_files

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class MetaCheckpoint:
    """A merged checkpoint: the transformers model, its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    stop_ids: List[int]
    files: List[Path]


def build_meta(
    folder: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    dtype: Optional[torch.dtype] = None,
    context_length: Optional[int] = None,
) -> MetaCheckpoint:
    """Read, merge and assemble a Meta folder on CPU; ``dtype=None`` keeps the checkpoint's."""
    files, params, tok_files, family, tokenizer, stops, shards = _open(folder, tokenizer_path)
    state = merge_shards(shards, params, dtype=dtype)
    del shards  # closes the mmaps
    vocab = state["model.embed_tokens.weight"].shape[0]
    tied = _untie_duplicate_output(state)
    config = hf_config(
        params,
        vocab_size=vocab,
        family=family,
        tied=tied,
        tokenizer=tokenizer,
        context_length=context_length,
        dtype=state["model.embed_tokens.weight"].dtype,
    )
    model = assemble(config, state)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    inputs = [*files, folder / "params.json", *tokenizer_inputs(tok_files)]
    return MetaCheckpoint(model, tokenizer, stops, inputs)


def _open(folder: Path, tokenizer_path: Optional[Path]) -> Tuple[Any, ...]:
    """The shards (memory-mapped, checked), params, tokenizer files, family, tokenizer and
    stop ids of a Meta folder; the vocabulary checked against the embedding's rows."""
    from .tokenizer_formats import detect_format

    files = shard_files(folder)
    params = read_params(folder)
    tok_files = tokenizer_files(folder, tokenizer_path)
    tiktoken = tok_files[0].name not in ("tokenizer.json", "tokenizer_config.json") and (
        detect_format(tok_files[0]) == "tiktoken"
    )
    family = params.family(tiktoken=tiktoken)
    tokenizer, stops = load_tokenizer(tok_files, variant="3.1" if family == "llama3.1" else "3")
    tensors = [load_shard(f) for f in files]
    shards = ShardSet(files=files, tensors=tensors, mapped=file_mappings(files))
    del tensors
    check_shards(shards)
    check_vocab(tokenizer, embedding_rows(shards, params), tok_files[0], folder)
    return files, params, tok_files, family, tokenizer, stops, shards


def tokenizer_inputs(tok_files: List[Path]) -> List[Path]:
    """A Hugging Face tokenizer is more than the two files that identify it: its special
    tokens map, chat template and added tokens decide answers too."""
    if tok_files[0].name in ("tokenizer.json", "tokenizer_config.json"):
        return folder_inputs(tok_files[0].parent, TOKENIZER_PATTERNS)
    return tok_files


def _untie_duplicate_output(state: Dict[str, torch.Tensor]) -> bool:
    """Llama 3.2 1B/3B share embedding and output: no output.weight, or an identical copy."""
    import torch

    out = state.get("lm_head.weight")
    if out is None:
        return True
    if torch.equal(out, state["model.embed_tokens.weight"]):
        del state["lm_head.weight"]
        return True
    return False


def hf_config(
    params: MetaParams,
    *,
    vocab_size: int,
    family: str,
    tied: bool,
    tokenizer: Any,
    context_length: Optional[int],
    dtype: torch.dtype,
) -> Any:
    from transformers import LlamaConfig

    rope_scaling = None
    if params.use_scaled_rope:
        # Llama 3.2's tied small models used factor 32, 3.1 factor 8 (params.json omits it).
        factor = params.rope_scaling_factor or (32.0 if tied else 8.0)
        rope_scaling = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=params.dim,
        intermediate_size=params.ffn_dim,
        num_hidden_layers=params.n_layers,
        num_attention_heads=params.n_heads,
        num_key_value_heads=params.n_kv_heads,
        max_position_embeddings=context_length or CONTEXT_LENGTHS[family],
        rms_norm_eps=params.norm_eps,
        rope_theta=params.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype=dtype,
    )


def assemble(config: Any, state: Dict[str, torch.Tensor]) -> Any:
    """A LlamaForCausalLM whose parameters *are* ``state`` (no random init, no second copy)."""
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():  # parameters on the meta device; buffers (rotary) real
        model = LlamaForCausalLM(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [
        k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")
    ]
    if missing or result.unexpected_keys:  # pragma: no cover - guarded by check_shapes
        raise ModelLoadError(
            Errors.E198.format(missing=missing[:5], unexpected=result.unexpected_keys[:5])
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def load_meta_folder(
    folder: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: Optional[str] = None,
    context_length: Optional[int] = None,
) -> LoadedModel:
    from ..placement import place, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if device_map is not None:  # pragma: no cover - multi-GPU
        return _load_with_device_map(
            folder,
            tokenizer_path=tokenizer_path,
            dtype=dtype,
            device_map=device_map,
            context_length=context_length,
        )
    ckpt = build_meta(
        folder, tokenizer_path=tokenizer_path, dtype=torch_dtype, context_length=context_length
    )
    model = place(ckpt.model, torch_device, torch_dtype)
    return finish_model(
        model,
        ckpt.tokenizer,
        name=folder.name,
        source=str(folder),
        fingerprint_files=ckpt.files,
        extra_stop_ids=ckpt.stop_ids,
    )


def _load_with_device_map(
    folder: Path,
    *,
    tokenizer_path: Optional[Path],
    dtype: str,
    device_map: str,
    context_length: Optional[int],
) -> LoadedModel:  # pragma: no cover - multi-GPU
    """accelerate's dispatch works from a saved folder: convert to a temporary one first."""
    tmp = Path(tempfile.mkdtemp(prefix="spacy-llama-meta-"))
    try:
        files = convert_meta(
            folder, tmp / "hf", tokenizer_path=tokenizer_path, context_length=context_length
        )
        return load_hf_folder(
            tmp / "hf",
            dtype=dtype,
            device_map=device_map,
            name=folder.name,
            source=str(folder),
            fingerprint_files=files,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_meta(
    folder: Path,
    dest: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    dtype: Optional[torch.dtype] = None,
    context_length: Optional[int] = None,
) -> List[Path]:
    """Write a Meta folder as a Hugging Face folder (safetensors + tokenizer); returns the
    source files. ``dtype=None`` keeps the checkpoint's dtype (usually bfloat16)."""
    ckpt = build_meta(
        check_meta_folder(folder),
        tokenizer_path=tokenizer_path,
        dtype=dtype,
        context_length=context_length,
    )
    ckpt.model.save_pretrained(str(dest), safe_serialization=True)
    ckpt.tokenizer.save_pretrained(str(dest))
    return ckpt.files


def build_meta_quantized(
    folder: Path,
    *,
    tokenizer_path: Optional[Path],
    quantize: Optional[str],
    dtype: torch.dtype,
    context_length: Optional[int] = None,
) -> MetaCheckpoint:
    """As :func:`build_meta`, but each merged tensor goes straight into a ``meta``-device
    model in the form ``quantize`` asks for (``hf_stream.put_tensor``), and its float copy
    is dropped: the peak is the kept weights plus one merged tensor."""
    import hashlib

    import torch
    from transformers import LlamaForCausalLM

    from ..gguf_stream import finish_skeleton
    from ..hf_stream import put_tensor
    from ..memory import release_freed_memory

    files, params, tok_files, family, tokenizer, stops, shards = _open(folder, tokenizer_path)
    vocab = embedding_rows(shards, params)
    has_output = "output.weight" in shards.tensors[0]
    config = hf_config(
        params,
        vocab_size=vocab,
        family=family,
        tied=not has_output,
        tokenizer=tokenizer,
        context_length=context_length,
        dtype=dtype,
    )
    with torch.device("meta"):
        model: Any = LlamaForCausalLM(config)
    embedding_digest: List[str] = []

    def put(name: str, tensor: torch.Tensor) -> None:
        digest = hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().data).hexdigest()
        if name == "model.embed_tokens.weight":
            embedding_digest.append(digest)
        elif name == "lm_head.weight" and embedding_digest == [digest]:
            # Llama 3.2 1B/3B: an identical copy of the embedding is the tied head
            model.lm_head = _tied_head(model)
            return
        put_tensor(model, name, tensor, dtype, quantize, tied=not has_output)

    merge_shards(shards, params, dtype=None, put=put)
    del shards  # closes the mmaps
    finish_skeleton(model, config, str(folder))
    release_freed_memory()
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    inputs = [*files, folder / "params.json", *tokenizer_inputs(tok_files)]
    return MetaCheckpoint(model, tokenizer, stops, inputs)


def _tied_head(model: Any) -> Any:
    import torch

    emb = model.model.embed_tokens
    head_of = getattr(emb, "head", None)
    if callable(head_of):  # int8 rows: the head over the same tensors
        return head_of()
    head = torch.nn.Linear(emb.weight.shape[1], emb.weight.shape[0], bias=False, device="cpu")
    head.weight = emb.weight
    return head
