"""``python -m spacy_llama annotate CONFIG_OR_PIPELINE INPUT OUTPUT [options] [--sec.key val]``

Annotates a corpus in batches, writing each batch durably, so an interrupted run resumes
where it stopped (``--resume``). One run at a time writes an OUTPUT (it holds
OUTPUT.lock; a second run stops at once and names the first). No output may be or lie in
the input. Exit codes: 0 all done, 2 input/config/output problem (also a full disk: the
finished batches are kept, --resume continues), 3 some documents failed (listed in
OUTPUT.failed.jsonl), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict

from .command import add_command, positive, run_with_overrides, takes_overrides
from .exit_codes import EXIT_FAILED, EXIT_OK


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "annotate",
        help="annotate a corpus (.txt/.jsonl/.spacy or a folder) into .jsonl and/or .spacy",
        doc=__doc__ or "",
    )
    p.add_argument("config", type=Path, help="a .cfg (assembled on the fly) or a pipeline folder")
    p.add_argument("input", type=Path, help=".txt (a doc a line), .jsonl, .spacy, or a folder")
    p.add_argument("output", type=Path, help="OUTPUT.jsonl, or OUTPUT.spacy (a folder of DocBins)")
    p.add_argument("--docbin", type=Path, help="also write a DocBin folder (name ends in .spacy)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--shard", help="process only slice I of N (by id hash), e.g. 1/4")
    p.add_argument("--batch-size", type=positive, help="docs per batch (and per durable write)")
    p.add_argument("--n-process", type=positive, default=1, help="worker processes (CPU)")
    p.add_argument("--limit", type=positive, help="only the first N documents (of the shard)")
    p.add_argument("--cache", type=Path, help="response cache (default OUTPUT.cache.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="do not cache model responses")
    p.add_argument(
        "--on-bad-line",
        choices=("stop", "skip"),
        default="stop",
        help="a broken input line stops the run, or is recorded and skipped",
    )
    p.add_argument(
        "--print",
        dest="print_docs",
        action="store_true",
        help="print each document's id, entities and completions",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or warnings")
    p.add_argument(
        "--html",
        type=Path,
        help="also write displaCy views (cats, entity reviews, relations, spans) of the "
        "first 20 documents annotated to this .html file",
    )
    p.add_argument("--ray", action="store_true", help="run on a Ray cluster (Ray Data actor pool)")
    p.add_argument("--ray-address", help="Ray cluster address, e.g. auto (default: a local one)")
    p.add_argument(
        "--workers", type=positive, default=2, help="Ray actors, each loading the pipeline once"
    )
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray actor")
    takes_overrides(
        p,
        run,
        hint=" Finished batches are saved; run the same command with --resume to continue.",
    )


def run(args: argparse.Namespace) -> int:
    return run_with_overrides(args, lambda overrides: _annotate(args, overrides))


def _annotate(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from ..batch.options import AnnotateOptions, RayOptions

    opts = AnnotateOptions(
        config=args.config,
        input=args.input,
        output=args.output,
        overrides=overrides,
        docbin=args.docbin,
        resume=args.resume,
        overwrite=args.overwrite,
        shard=args.shard,
        batch_size=args.batch_size,
        n_process=args.n_process,
        limit=args.limit,
        cache=args.cache,
        no_cache=args.no_cache,
        on_bad_line=args.on_bad_line,
        quiet=args.quiet,
        print_docs=args.print_docs,
        html=args.html,
    )
    if args.ray:
        from ..batch.ray import annotate_ray

        ray_opts = RayOptions(
            address=args.ray_address,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
        )
        summary = annotate_ray(opts, ray_opts)
        name = "annotate --ray"
    else:
        from ..batch.local import annotate

        summary = annotate(opts)
        name = "annotate"
    print(f"[spacy-llama] {name}: {summary.line()}", file=sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK
