"""Loading a transformers folder into a :class:`LoadedModel`, once per process.

Every local loader ends here: HF.v1 loads the user's folder, GGUF.v1 and Meta.v1 load the
folder they converted to. :func:`cached_load` keys a loaded model by its source and
placement, so several pipelines (or a pipeline and its evaluation) share one copy, until the
source's files change: then it is loaded again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import Errors, ModelLoadError
from .base import LoadedModel
from .fingerprint import FileStamp, file_stamps, hf_inputs, loaded_state_digest

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_LOADED: Dict[Tuple[Any, ...], Tuple[Tuple[FileStamp, ...], LoadedModel]] = {}
_LOCK = threading.Lock()


def cached_load(
    key: Tuple[Any, ...],
    load: Callable[[], LoadedModel],
    *,
    stamps: Tuple[FileStamp, ...] = (),
) -> LoadedModel:
    """Load each (source, device, dtype) once per process: several pipelines share it.
    ``stamps`` are the versions of the source's files (:func:`.fingerprint.source_stamps`):
    once they differ, the source was edited, and it is loaded again (replacing the old)."""
    with _LOCK:
        cached = _LOADED.get(key)
        if cached is None or cached[0] != stamps:
            _LOADED[key] = (stamps, load())
        return _LOADED[key][1]


def clear_loaded_models() -> None:
    with _LOCK:
        _LOADED.clear()


def weight_files(folder: Path) -> List[Path]:
    files: List[Path] = []
    for pattern in _WEIGHT_PATTERNS:
        files.extend(sorted(folder.glob(pattern)))
    return files


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
    extra_fingerprint: str = "",
) -> LoadedModel:
    """``fingerprint_files`` default to the folders' own (:func:`.fingerprint.hf_inputs`);
    a converting loader names its source files instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .placement import place, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tok_folder = tokenizer_path or folder
    if fingerprint_files is None:
        fingerprint_files = hf_inputs(folder, tok_folder)
    stamps = file_stamps(fingerprint_files)  # before reading: an edit while loading counts
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(tok_folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelLoadError(Errors.E451.format(path=str(tok_folder), error=e)) from e
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
        raise ModelLoadError(Errors.E452.format(path=str(folder), error=e)) from e
    if device_map is None:
        model = place(model, torch_device, torch_dtype)
    else:  # pragma: no cover - multi-GPU
        model.eval()
    return finish_model(
        model,
        tokenizer,
        name=name or folder.name,
        source=source or str(folder),
        fingerprint_files=fingerprint_files,
        extra_fingerprint=extra_fingerprint,
        loaded_stamps=stamps,
    )


def finish_model(
    model: Any,
    tokenizer: Any,
    *,
    name: str,
    source: str,
    fingerprint_files: Optional[List[Path]] = None,
    extra_stop_ids: Optional[List[int]] = None,
    extra_fingerprint: str = "",
    loaded_stamps: Optional[Tuple[FileStamp, ...]] = None,
) -> LoadedModel:
    """Collect stop ids, pad id and context length from a loaded transformers model, and
    what its fingerprint needs: the versions of its files and the digest of what was
    loaded (taken now, before anything can change the model or tokenizer in memory)."""
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
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        context_length=context,
        stop_token_ids=stop,
        pad_token_id=int(pad),
        fingerprint_files=list(fingerprint_files or []),
        extra_fingerprint=extra_fingerprint,
        loaded_state=loaded_state_digest(model, tokenizer),
        loaded_stamps=(
            loaded_stamps if loaded_stamps is not None else file_stamps(fingerprint_files or [])
        ),
    )
