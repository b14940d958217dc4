"""Converting a Meta checkpoint folder or a GGUF file into a Hugging Face folder
(safetensors + tokenizer files) that spacy-llama.HF.v1, transformers and spacy-transformers
load directly. DEST is written next to itself and moved into place: never half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Errors, ModelLoadError


@dataclass
class _MetaOptions:
    dtype: str = "auto"
    tokenizer_path: Optional[Path] = None
    context_length: Optional[int] = None


def convert(
    src: Path,
    dest: Path,
    *,
    dtype: str = "auto",
    tokenizer_path: Optional[Path] = None,
    context_length: Optional[int] = None,
    force: bool = False,
) -> None:
    """``src`` (a .gguf file or a Meta folder) -> a Hugging Face folder at ``dest``."""
    check_dest(dest, force=force)
    opts = _MetaOptions(dtype, tokenizer_path, context_length)
    if src.is_file() or src.suffix == ".gguf":
        _convert_gguf(src, dest, opts)
    else:
        _convert_meta(src, dest, opts)


def check_dest(dest: Path, *, force: bool) -> None:
    """Before any work: DEST can be created, and is not replaced unless ``force``."""
    blocker = next((p for p in dest.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ModelLoadError(Errors.E162.format(dest=str(dest), blocker=str(blocker)))
    if dest.exists() and any(dest.iterdir() if dest.is_dir() else [dest]):
        if not force:
            raise ModelLoadError(Errors.E160.format(path=str(dest)))


def _convert_gguf(src: Path, dest: Path, opts: _MetaOptions) -> None:
    from .gguf import check_gguf_file, convert_gguf

    if opts.dtype != "auto" or opts.tokenizer_path is not None or opts.context_length:
        raise ModelLoadError(Errors.E161.format(path=str(src)))
    file = check_gguf_file(src)
    _replace(dest, lambda tmp: convert_gguf(file, tmp))


def _convert_meta(src: Path, dest: Path, opts: _MetaOptions) -> None:
    from .meta import convert_meta
    from .placement import resolve_dtype

    dtype = None if opts.dtype == "auto" else resolve_dtype(opts.dtype, _cpu())
    _replace(
        dest,
        lambda tmp: convert_meta(
            src,
            tmp,
            tokenizer_path=opts.tokenizer_path,
            dtype=dtype,
            context_length=opts.context_length,
        ),
    )


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def _replace(dest: Path, write: Callable[[Path], object]) -> None:
    """Write into a sibling temp folder, then move it into place: no half-written DEST."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_root = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as e:  # permissions, a read-only disk
        raise ModelLoadError(Errors.E163.format(dest=str(dest), error=e)) from None
    try:
        write(tmp_root / "out")
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(tmp_root / "out", dest)
    except OSError as e:  # a full disk while writing; DEST is replaced only at the end
        raise ModelLoadError(Errors.E163.format(dest=str(dest), error=e)) from None
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
