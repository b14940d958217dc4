"""``spacy-llama.HF.v1``: a local Hugging Face folder holding any LlamaForCausalLM."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..registry import llama_models
from .base import DTypeName, LlamaModel, ModelLoadError

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_LOADED: Dict[Tuple[Any, ...], LlamaModel] = {}
_LOCK = threading.Lock()


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
    )


def cached_load(key: Tuple[Any, ...], load: Callable[[], LlamaModel]) -> LlamaModel:
    """Load each (source, device, dtype) once per process: several pipelines share it."""
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]


def clear_loaded_models() -> None:
    with _LOCK:
        _LOADED.clear()


def weight_files(folder: Path) -> List[Path]:
    files: List[Path] = []
    for pattern in _WEIGHT_PATTERNS:
        files.extend(sorted(folder.glob(pattern)))
    return files


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


def load_hf_folder(
    folder: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: Optional[str] = None,
    trust_remote_code: bool = False,
    name: Optional[str] = None,
    source: Optional[str] = None,
    fingerprint_files: Optional[List[Path]] = None,
) -> LlamaModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .placement import place, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tok_folder = tokenizer_path or folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(tok_folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelLoadError(
            f"Could not load a tokenizer from {str(tok_folder)!r}: {e}. The folder needs "
            "tokenizer.json or tokenizer.model (+ tokenizer_config.json); set `tokenizer_path` "
            "to point elsewhere."
        ) from e
    kwargs: Dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "torch_dtype": torch_dtype,
    }
    if device_map is not None:  # pragma: no cover - multi-GPU
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as e:
        raise ModelLoadError(f"Could not load model weights from {str(folder)!r}: {e}") from e
    if device_map is None:
        model = place(model, torch_device, torch_dtype)
    else:  # pragma: no cover - multi-GPU
        model.eval()
    return finish_model(
        model,
        tokenizer,
        name=name or folder.name,
        source=source or str(folder),
        fingerprint_files=fingerprint_files
        if fingerprint_files is not None
        else weight_files(folder),
    )


def finish_model(
    model: Any,
    tokenizer: Any,
    *,
    name: str,
    source: str,
    fingerprint_files: Optional[List[Path]] = None,
    extra_stop_ids: Optional[List[int]] = None,
) -> LlamaModel:
    """Collect stop ids, pad id and context length from a loaded transformers model."""
    stop: List[int] = []
    candidates: List[Any] = [
        getattr(model.config, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        tokenizer.eos_token_id,
        *(extra_stop_ids or []),
    ]
    for c in candidates:
        for i in c if isinstance(c, (list, tuple)) else [c]:
            if i is not None and int(i) not in stop:
                stop.append(int(i))
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = stop[0] if stop else 0
    context = int(
        getattr(model.config, "max_position_embeddings", None)
        or getattr(tokenizer, "model_max_length", None)
        or 2048
    )
    return LlamaModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        context_length=context,
        stop_token_ids=stop,
        pad_token_id=int(pad),
        fingerprint_files=list(fingerprint_files or []),
    )
