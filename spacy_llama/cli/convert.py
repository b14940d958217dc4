"""``python -m spacy_llama convert SRC DEST``: a Meta checkpoint folder or a GGUF file ->
a Hugging Face folder (safetensors + tokenizer files) that spacy-llama.HF.v1, transformers
and spacy-transformers load directly."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .exit_codes import EXIT_ERROR, EXIT_OK

DTYPES = ("auto", "float32", "bfloat16", "float16")


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
        choices=DTYPES,
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
    parser.set_defaults(func=run, error_exit=EXIT_ERROR)


def run(args: argparse.Namespace) -> int:
    from ..models.convert import convert

    dest = Path(args.dest).expanduser()
    convert(
        Path(args.src).expanduser(),
        dest,
        dtype=args.dtype,
        tokenizer_path=args.tokenizer_path,
        context_length=args.context_length,
        force=args.force,
    )
    print(
        f"Wrote a Hugging Face folder to {dest}. Load it with "
        f'@llama_models = "spacy-llama.HF.v1" and path = "{dest}".'
    )
    return EXIT_OK
