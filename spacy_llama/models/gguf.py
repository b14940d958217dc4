"""``spacy-llama.GGUF.v1``: a ``.gguf`` file, de-quantised once and cached as safetensors.

transformers de-quantises GGUF tensors in Python (~20 s for SmolLM2-135M). We do that once,
write a Hugging Face folder (safetensors) into a user cache keyed by the file's sha256, and
load that folder from then on (seconds). The folder's last file is a marker listing every
file and its size; a folder whose marker is missing, or whose files are missing, truncated
or unreadable, is converted again (with a warning) instead of being loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import Errors, ModelLoadError, Warnings
from ..registry import llama_models
from .base import DTypeName, LoadedModel, file_digest
from .fingerprint import source_stamps
from .loading import cached_load, load_hf_folder

GGUF_MAGIC = b"GGUF"
# Bump when the conversion changes, so caches of an older conversion are not reused.
CONVERSION_VERSION = 2
MARKER = "spacy_llama_conversion.json"  # written last: the conversion is complete


def default_cache_dir() -> Path:
    env = os.environ.get("SPACY_LLAMA_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spacy_llama"


@llama_models("spacy-llama.GGUF.v1")
def gguf_model_v1(
    path: Union[str, Path],
    *,
    device: str = "auto",
    dtype: DTypeName = "auto",
    cache_dir: Optional[Union[str, Path]] = None,
) -> LoadedModel:
    """Load a LLaMA-architecture ``.gguf`` file (any quantisation transformers reads)."""
    file = check_gguf_file(path)
    key = ("gguf", str(file.resolve()), device, dtype, str(cache_dir))
    return cached_load(
        key,
        lambda: load_gguf(file, device=device, dtype=dtype, cache_dir=cache_dir),
        stamps=source_stamps(file),
    )


def check_gguf_file(path: Union[str, Path]) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise ModelLoadError(Errors.E150.format(path=str(file)))
    if file.is_dir():
        ggufs = sorted(p.name for p in file.glob("*.gguf"))
        if ggufs:
            raise ModelLoadError(Errors.E151.format(path=str(file), ggufs=ggufs))
        raise ModelLoadError(Errors.E152.format(path=str(file)))
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(Errors.E153.format(path=str(file), magic=magic))
    return file


def converted_folder(file: Path, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where the safetensors conversion of this exact file lives: keyed by its content hash
    alone, so the same file under another name or folder reuses it. A conversion written
    under the older ``{stem}-{hash}`` name is reused as it is."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = f"{file_digest(file)[:16]}-c{CONVERSION_VERSION}"
    folder = root / "gguf" / key
    if not folder.exists():
        legacy = sorted((root / "gguf").glob(f"*-{key}")) if (root / "gguf").is_dir() else []
        if legacy:
            return legacy[0]
    return folder


def convert_gguf(file: Path, dest: Path) -> Path:
    """De-quantise ``file`` into a Hugging Face folder at ``dest`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise ModelLoadError(Errors.E154.format(path=str(file), error=error)) from e
        fix_special_tokens(tokenizer, file)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_marker(tmp)
        if dest.exists():  # another process won the race; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        hf_logging.set_verbosity(verbosity)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_marker(folder: Path) -> None:
    """The conversion's last file: every other file and its size."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    marker = {"conversion": CONVERSION_VERSION, "files": sizes}
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def cache_problem(folder: Path) -> Optional[str]:
    """Why the conversion in ``folder`` must not be loaded, or None if it is complete."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        sizes: Dict[str, int] = dict(marker["files"])
    except FileNotFoundError:
        return "no completion marker: the conversion was interrupted or is older"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable completion marker ({type(e).__name__}: {e})"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not {size} (truncated?)"
    return _weights_problem(folder)


def _weights_problem(folder: Path) -> Optional[str]:
    """Each safetensors file's header must parse (reads the header only)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types
            return f"{path.name} does not load ({type(e).__name__}: {e})"
    return None


def ensure_converted(file: Path, folder: Path) -> Path:
    """The conversion of ``file`` at ``folder``: reused if complete, else (re)built."""
    if not folder.exists():
        return convert_gguf(file, folder)
    problem = cache_problem(folder)
    if problem is None:
        return folder
    message = Warnings.W120.format(folder=folder, file=file, reason=problem)
    warnings.warn(f"[spacy-llama] {message}", stacklevel=3)
    _discard(folder)
    return convert_gguf(file, folder)


def _discard(folder: Path) -> None:
    """Move a damaged conversion aside (atomically) and delete it."""
    trash = Path(tempfile.mkdtemp(prefix=folder.name + ".damaged.", dir=folder.parent))
    try:
        os.replace(folder, trash / "old")
    except FileNotFoundError:  # another process discarded it first
        pass
    shutil.rmtree(trash, ignore_errors=True)


def fix_special_tokens(tokenizer: Any, file: Path) -> None:
    """Take BOS/EOS/pad and add-BOS from the GGUF metadata.

    transformers 4.53's GGUF tokenizer conversion mixes them up (SmolLM2 comes out with
    ``eos_token = "<|im_start|>"`` and a BOS prepended that llama.cpp would not add).
    """
    from gguf import GGUFReader

    fields = GGUFReader(str(file)).fields

    def scalar(key: str) -> Optional[Any]:
        field = fields.get(key)
        if field is None or not field.data:
            return None
        return field.parts[field.data[0]][0].item()

    for attr, key in (
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ):
        token_id = scalar(key)
        if token_id is not None and 0 <= int(token_id) < len(tokenizer):
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(int(token_id)))
    add_bos = scalar("tokenizer.ggml.add_bos_token")
    if add_bos is not None and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = bool(add_bos)
    add_eos = scalar("tokenizer.ggml.add_eos_token")
    if add_eos is not None and hasattr(tokenizer, "add_eos_token"):
        tokenizer.add_eos_token = bool(add_eos)


def load_gguf(
    file: Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: Optional[Union[str, Path]] = None,
) -> LoadedModel:
    folder = ensure_converted(file, converted_folder(file, cache_dir))
    model = load_hf_folder(
        folder,
        device=device,
        dtype=dtype,
        name=file.stem,
        source=str(file),
        fingerprint_files=[file],
        # the file's hash covers what it holds; this covers what our conversion makes of it
        extra_fingerprint=f"gguf-conversion={CONVERSION_VERSION}",
    )
    return model
