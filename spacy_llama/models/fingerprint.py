"""What a model's fingerprint covers, and how it stays cheap.

The fingerprint keys the response cache and a corpus run's config hash, so it must change
whenever the answers can: the weights, the model config (rope settings, context length), the
generation config, the tokenizer files and chat template, adapters, and whatever a loader
fixes in memory (GGUF special tokens, Meta's context length: :func:`loaded_state_digest`).

File contents are hashed once per process and file version (:func:`file_digest`); which file
versions a model was loaded from is remembered (:func:`file_stamps`), so neither the
per-process model cache nor a fingerprint taken later can describe files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

# (path, size, mtime, inode): a file version. The inode catches an atomic save (write a
# temporary file, rename it over the old one) of equal size within one mtime tick.
FileStamp = Tuple[str, int, int, int]

# What in a Hugging Face folder decides the answers. Weights and adapters (a folder with an
# adapter_config.json gets its adapter loaded by transformers when peft is installed), the
# configs (config, generation_config, quantization inside config.json), the tokenizer in any
# of its formats, chat templates, and remote code.
TOKENIZER_PATTERNS = (
    "*.json",
    "*.jinja",
    "tokenizer.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
)
HF_PATTERNS = (
    "*.safetensors",
    "pytorch_model*.bin",
    "adapter_model.bin",
    "*.py",
    *TOKENIZER_PATTERNS,
)
# Keys of a loaded config that name where it came from or which library wrote it, not what
# it computes (a moved folder keeps its fingerprint).
_LOCATION_KEYS = ("transformers_version",)

_DIGESTS: Dict[FileStamp, str] = {}


def file_stamp(path: Path) -> FileStamp:
    """The version of a file (a missing one is all -1, so its appearance is a change)."""
    try:
        st = os.stat(path)
    except OSError:
        return (str(Path(path).resolve()), -1, -1, -1)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_stamps(paths: Iterable[Path]) -> Tuple[FileStamp, ...]:
    return tuple(file_stamp(p) for p in paths)


def source_stamps(*paths: Optional[Path]) -> Tuple[FileStamp, ...]:
    """The versions of the files a loader reads: each file named, and every file directly
    inside each folder named (a per-process model cache key)."""
    files: List[Path] = []
    for path in paths:
        if path is None:
            continue
        path = Path(path).expanduser()
        files.extend(sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])
    return file_stamps(files)


def changed_files(stamps: Iterable[FileStamp]) -> List[str]:
    """The paths among ``stamps`` whose file is no longer that version."""
    return [s[0] for s in stamps if file_stamp(Path(s[0])) != s]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's contents, memoised per file version in this process."""
    key = file_stamp(path)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                block = f.read(chunk)
                if not block:
                    break
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def folder_inputs(folder: Path, patterns: Iterable[str] = HF_PATTERNS) -> List[Path]:
    """The files directly in ``folder`` that match ``patterns`` (each once, sorted)."""
    found = {p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()}
    return sorted(found)


def hf_inputs(folder: Path, tokenizer_folder: Optional[Path] = None) -> List[Path]:
    """Everything of a Hugging Face model (and of a tokenizer kept elsewhere) that decides
    its answers."""
    files = folder_inputs(folder)
    if tokenizer_folder is not None and Path(tokenizer_folder).resolve() != folder.resolve():
        tok = Path(tokenizer_folder)
        files += [tok] if tok.is_file() else folder_inputs(tok, TOKENIZER_PATTERNS)
    return files


def loaded_state_digest(model: Any, tokenizer: Any) -> str:
    """sha256 of what was loaded, as canonical JSON: the model and generation configs and
    the tokenizer (its full definition, special tokens, chat template). It covers what a
    loader changes in memory, which no file records."""
    state = {
        "config": _config_dict(getattr(model, "config", None)),
        "generation": _config_dict(getattr(model, "generation_config", None)),
        "tokenizer": tokenizer_state(tokenizer),
    }
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _config_dict(config: Any) -> Optional[Dict[str, Any]]:
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return None
    data: Dict[str, Any] = to_dict()
    # "_name_or_path" is where it was loaded from, "_attn_implementation*" how transformers
    # chose to run it, "_from_model_config" where the values came from: not what it computes.
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in _LOCATION_KEYS}


def tokenizer_state(tokenizer: Any) -> Optional[Dict[str, Any]]:
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else None
    added: Dict[str, int] = getattr(tokenizer, "get_added_vocab", dict)()
    return {
        "class": type(tokenizer).__name__,
        "size": len(tokenizer),
        "definition": hashlib.sha256(definition.encode()).hexdigest() if definition else None,
        "special": getattr(tokenizer, "special_tokens_map", None),
        "added": sorted(added.items()),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
    }


def base_identity(model: Any, tokenizer: Any) -> str:
    """What makes a base model the same for a trained adapter: its weights (names, shapes,
    values) and its tokenizer's vocabulary and special tokens; not the files or format it
    was read from, so a GGUF file and ``convert``'s folder of it are one base. The weights
    are hashed as float32 (a second or so for 135M parameters), once per adapter."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    vocab = sorted(getattr(tokenizer, "get_vocab", dict)().items())
    special = {
        "bos": getattr(tokenizer, "bos_token_id", None),
        "eos": getattr(tokenizer, "eos_token_id", None),
        "added": sorted(getattr(tokenizer, "get_added_vocab", dict)().items()),
    }
    h.update(json.dumps([vocab, special], sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()
