"""``spacy-llama.HF.v1``: a local Hugging Face folder holding any LlamaForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from ..errors import ModelLoadError
from ..registry import llama_models
from .base import DTypeName, LlamaModel
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
) -> LlamaModel:
    """Load a causal LM and its tokenizer from a local folder (no hub access)."""
    folder = check_hf_folder(path)
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
        raise ModelLoadError(
            f"Model path {str(folder)!r} does not exist. Set `path` in "
            "[components.llama.model] to a local Hugging Face model folder (with config.json "
            'and *.safetensors), or use @llama_models = "spacy-llama.GGUF.v1" for a .gguf file.'
        )
    if folder.is_file():
        hint = (
            ' It is a file: for GGUF use @llama_models = "spacy-llama.GGUF.v1".'
            if folder.suffix == ".gguf"
            else ""
        )
        raise ModelLoadError(
            f"Model path {str(folder)!r} is a file, but spacy-llama.HF.v1 expects a folder "
            f"with config.json and weights.{hint}"
        )
    config = folder / "config.json"
    found = sorted(p.name for p in folder.iterdir())[:10]
    if not config.exists():
        raise ModelLoadError(
            f"{str(folder)!r} is not a Hugging Face model folder: no config.json (found: "
            f"{found or 'nothing'}). For Meta's consolidated.*.pth use spacy-llama.Meta.v1; "
            "for a .gguf file use spacy-llama.GGUF.v1."
        )
    try:
        json.loads(config.read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{str(config)!r} is not valid JSON: {e}") from e
    if not weight_files(folder):
        raise ModelLoadError(
            f"{str(folder)!r} has a config.json but no weights (*.safetensors or "
            f"pytorch_model*.bin); found: {found}."
        )
    return folder
