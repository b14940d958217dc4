"""``python -m spacy_llama convert SRC DEST``: a Meta checkpoint folder or a GGUF file ->
a Hugging Face folder (safetensors + tokenizer files) that spacy-llama.HF.v1, transformers
and spacy-transformers load directly."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="Convert a Meta checkpoint folder or a .gguf file to a Hugging Face folder.",
        description=__doc__,
    )
    parser.add_argument("src", type=Path, help="Meta folder (consolidated.*.pth) or .gguf file")
    parser.add_argument("dest", type=Path, help="output folder (must not exist, or use --force)")
    parser.add_argument(
        "--dtype",
        choices=_DTYPES,
        default="auto",
        help="Meta only: dtype of the written weights; auto keeps the checkpoint's (bfloat16).",
    )
    parser.add_argument(
        "--tokenizer-path",
        type=Path,
        default=None,
        help="Meta only: tokenizer.model (or Hugging Face tokenizer folder) to use instead of "
        "SRC/tokenizer.model.",
    )
    parser.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="Meta only: override max_position_embeddings (default: the family's).",
    )
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.base import ModelLoadError

    src, dest = Path(args.src).expanduser(), Path(args.dest).expanduser()
    try:
        _check_dest(dest, force=args.force)
        if src.is_file() or src.suffix == ".gguf":
            _convert_gguf(src, dest, args)
        else:
            _convert_meta(src, dest, args)
    except ModelLoadError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(
        f"Wrote a Hugging Face folder to {dest}. Load it with "
        f'@llama_models = "spacy-llama.HF.v1" and path = "{dest}".'
    )
    return 0


def _check_dest(dest: Path, *, force: bool) -> None:
    from ..models.base import ModelLoadError

    if dest.exists() and any(dest.iterdir() if dest.is_dir() else [dest]):
        if not force:
            raise ModelLoadError(
                f"Destination {str(dest)!r} already exists and is not empty. Choose another "
                "folder or pass --force to replace it."
            )


def _convert_gguf(src: Path, dest: Path, args: argparse.Namespace) -> None:
    from ..models.base import ModelLoadError
    from ..models.gguf import check_gguf_file, convert_gguf

    if args.dtype != "auto" or args.tokenizer_path is not None or args.context_length:
        raise ModelLoadError(
            "--dtype, --tokenizer-path and --context-length apply to Meta checkpoints only; a "
            f"GGUF file ({str(src)!r}) is converted as it is (de-quantised to float32)."
        )
    file = check_gguf_file(src)
    _replace(dest, lambda tmp: convert_gguf(file, tmp))


def _convert_meta(src: Path, dest: Path, args: argparse.Namespace) -> None:
    from ..models.meta import convert_meta
    from ..models.placement import resolve_dtype

    dtype = None if args.dtype == "auto" else resolve_dtype(args.dtype, _cpu())
    _replace(
        dest,
        lambda tmp: convert_meta(
            src,
            tmp,
            tokenizer_path=args.tokenizer_path,
            dtype=dtype,
            context_length=args.context_length,
        ),
    )


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def _replace(dest: Path, write: Callable[[Path], object]) -> None:
    """Write into a sibling temp folder, then move it into place: no half-written DEST."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write(tmp_root / "out")
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(tmp_root / "out", dest)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
