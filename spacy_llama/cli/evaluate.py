"""``python -m spacy_llama evaluate CONFIG_OR_PIPELINE GOLD [--limit N] [--output F] [--sec.key v]``

Runs the pipeline on the texts of a gold set (.spacy DocBin, or .jsonl with "text", "cats"
and "ents" as [start, end, label] character offsets) and prints precision, recall and F per
label for every llama component whose task can score itself (TextCat: doc.cats; EntityReview
and NER: entities over the task's labels). Exit codes: 0 done, 2 input/config problem.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from .command import add_command, run_with_overrides, takes_overrides
from .exit_codes import EXIT_OK


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "evaluate",
        help="score the llama tasks of a pipeline against a gold set (P/R/F per label)",
        doc=__doc__ or "",
    )
    p.add_argument("config", type=Path, help="a .cfg (assembled on the fly) or a pipeline folder")
    p.add_argument("gold", type=Path, help="gold .spacy (DocBin) or .jsonl")
    p.add_argument("--limit", type=int, help="only the first N gold documents")
    p.add_argument("--output", type=Path, help="also write the scores as JSON")
    takes_overrides(p, run)


def run(args: argparse.Namespace) -> int:
    return run_with_overrides(args, lambda overrides: _evaluate(args, overrides))


def _evaluate(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    import srsly

    from ..batch.evaluate import evaluate, format_scores, read_gold
    from ..batch.loading import load_pipeline

    nlp = load_pipeline(args.config, overrides=overrides, announce=True)
    gold = read_gold(args.gold, nlp)[: args.limit]
    scores = evaluate(nlp, gold)
    print(format_scores(scores))
    if args.output is not None:
        srsly.write_json(args.output, scores)
    return EXIT_OK
