"""``python -m spacy_llama merge OUTPUT SHARD_OUTPUT...``: join the outputs of
``annotate --shard I/N`` runs into one.

JSONL shards are concatenated (each record once, by id); DocBin folders have their parts
copied. The shards' ``.run.json`` files must agree on the config and together cover
1..N; ``--partial`` merges an incomplete set anyway. Failed-document lists are joined too.
The merged output gets a ``.run.json`` without a shard, so ``annotate --resume`` on the
whole corpus can fill in whatever the shards missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .command import add_command
from .exit_codes import EXIT_OK


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "merge",
        help="join the outputs of `annotate --shard I/N` runs",
        doc=__doc__ or "",
    )
    p.add_argument("output", type=Path, help="the merged .jsonl file or .spacy folder")
    p.add_argument("shards", type=Path, nargs="+", help="the shard outputs, in order")
    p.add_argument("--partial", action="store_true", help="allow missing or unfinished shards")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch.merge import merge

    count = merge(args.output, args.shards, partial=args.partial, overwrite=args.overwrite)
    print(
        f"[spacy-llama] merge: {count} records from {len(args.shards)} shards -> {args.output}",
        file=sys.stderr,
    )
    return EXIT_OK
