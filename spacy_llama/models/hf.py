"""``spacy-llama.HF.v1``: a local Hugging Face folder holding a causal LM.

A LlamaForCausalLM runs on the fused decoder. Any other causal LM transformers can load
(GPT-2, Mistral, ...) is loaded with a warning that names its architecture (W830,
models/architecture.py): it runs on the slower portable loop, and the shipped prompts are
written for LLaMA-family instruct models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import Errors, ModelLoadError, Warnings
from ..registry import llama_models
from .architecture import architecture_name, fused_decoder_blocker
from .base import DTypeName, LoadedModel
from .fingerprint import source_stamps
from .loading import cached_load, load_hf_folder, weight_files


@llama_models("spacy-llama.HF.v1")
def hf_model_v1(
    path: Union[str, Path],
    *,
    tokenizer_path: Optional[Union[str, Path]] = None,
    device: str = "auto",
    dtype: DTypeName = "auto",
    device_map: Optional[str] = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local folder (no hub access)."""
    folder = check_hf_folder(path)
    warn_unfused_architecture(folder)
    tok_folder = Path(tokenizer_path) if tokenizer_path is not None else folder
    key = ("hf", str(folder.resolve()), str(tok_folder), device, dtype, device_map)
    return cached_load(
        key,
        lambda: load_hf_folder(
            folder,
            tokenizer_path=tok_folder,
            device=device,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
        ),
        stamps=source_stamps(folder, tok_folder if tokenizer_path is not None else None),
    )


def check_hf_folder(path: Union[str, Path]) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(Errors.E453.format(path=str(folder)))
    if folder.is_file():
        hint = (
            ' It is a file: for GGUF use @llama_models = "spacy-llama.GGUF.v1".'
            if folder.suffix == ".gguf"
            else ""
        )
        raise ModelLoadError(Errors.E454.format(path=str(folder), hint=hint))
    config = folder / "config.json"
    found = sorted(p.name for p in folder.iterdir())[:10]
    if not config.exists():
        raise ModelLoadError(Errors.E455.format(path=str(folder), found=found or "nothing"))
    try:
        read_config(folder)
    except (OSError, ValueError) as e:
        raise ModelLoadError(Errors.E456.format(path=str(config), error=e)) from e
    if not weight_files(folder):
        raise ModelLoadError(Errors.E457.format(path=str(folder), found=found))
    return folder


def read_config(folder: Path) -> Dict[str, Any]:
    data = json.loads((folder / "config.json").read_text(encoding="utf8"))
    return data if isinstance(data, dict) else {}


def warn_unfused_architecture(folder: Path) -> None:
    """W830 when the folder's model is not one the fused decoder runs (named from
    config.json before loading: the user sees which architecture and why)."""
    config = read_config(folder)
    reason = fused_decoder_blocker(config)
    if reason is not None:
        message = Warnings.W830.format(
            path=str(folder), arch=architecture_name(config), reason=reason
        )
        warnings.warn(f"[spacy-llama] {message}", stacklevel=3)
