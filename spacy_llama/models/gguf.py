"""``spacy-llama.GGUF.v1``: a ``.gguf`` file, de-quantised once and cached as safetensors.

transformers de-quantises GGUF tensors in Python (~20 s for SmolLM2-135M). We do that once,
write a Hugging Face folder (safetensors) into a user cache keyed by the file's sha256, and
load that folder from then on (seconds).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ModelLoadError
from ..registry import llama_models
from .base import DTypeName, LlamaModel, file_digest
from .fingerprint import source_stamps
from .loading import cached_load, load_hf_folder

GGUF_MAGIC = b"GGUF"
# Bump when the conversion changes, so caches of an older conversion are not reused.
CONVERSION_VERSION = 2


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
) -> LlamaModel:
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
        raise ModelLoadError(
            f"GGUF file {str(file)!r} does not exist. Set `path` in [components.llama.model] "
            "to a .gguf file."
        )
    if file.is_dir():
        ggufs = sorted(p.name for p in file.glob("*.gguf"))
        hint = f" It contains {ggufs}: point `path` at one of them." if ggufs else ""
        raise ModelLoadError(
            f"GGUF path {str(file)!r} is a folder, but spacy-llama.GGUF.v1 expects a .gguf "
            f"file.{hint} For a Hugging Face folder use spacy-llama.HF.v1."
        )
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{str(file)!r} is not a GGUF file (it starts with {magic!r}, expected b'GGUF'). "
            "The file may be corrupt or truncated; download or convert it again."
        )
    return file


def converted_folder(file: Path, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where the safetensors conversion of this exact file lives (keyed by content hash)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "gguf" / f"{file.stem}-{file_digest(file)[:16]}-c{CONVERSION_VERSION}"


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
            raise ModelLoadError(
                f"Could not read GGUF file {str(file)!r}: {type(e).__name__}: {e}. The file may "
                "be corrupt or truncated, or hold an architecture other than LLaMA."
            ) from e
        fix_special_tokens(tokenizer, file)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if dest.exists():  # another process won the race; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        hf_logging.set_verbosity(verbosity)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
) -> LlamaModel:
    folder = converted_folder(file, cache_dir)
    if not (folder / "config.json").exists():
        convert_gguf(file, folder)
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
