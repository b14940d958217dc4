"""``python -m spacy_llama distill TEACHER INPUT OUTPUT_DIR --student textcat|ner|spancat
[--gold GOLD.spacy] [--review-fraction 0.2] [--corrections FILE] [--sec.key val ...]``

From LLM annotations to a small spaCy pipeline, in five resumable steps (a run started again
after a kill goes on from the first unfinished one; see ``OUTPUT_DIR/distill.json``):

1. the teacher annotates INPUT (``annotate``'s durable run: OUTPUT_DIR/annotations.jsonl,
   with a confidence for every prediction);
2. the least confident --review-fraction of the documents go to OUTPUT_DIR/review.jsonl
   (Prodigy) and review.label-studio.json (Label Studio); pass the corrected export back
   with --corrections;
3. OUTPUT_DIR/train.spacy and dev.spacy (dev: --gold, else a held-out slice);
4. a student config (student.cfg) trained with spaCy's train: OUTPUT_DIR/student/model-best
   (a ner student starts from the teacher pipeline's NER where it has one; --from-scratch
   starts it untrained);
5. OUTPUT_DIR/report.json and report.html.

The --sec.key val overrides apply to the teacher, as in ``annotate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

from .command import add_command, run_with_overrides, takes_overrides
from .exit_codes import EXIT_OK


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "distill",
        help="annotate with the LLM teacher, review the unsure docs, train a small spaCy student",
        doc=__doc__ or "",
    )
    p.add_argument("teacher", type=Path, help="a pipeline folder or .cfg with a llama component")
    p.add_argument("input", type=Path, help="unlabelled texts: .txt, .jsonl, .spacy or a folder")
    p.add_argument("output_dir", type=Path, help="where every step writes (and resumes from)")
    p.add_argument("--student", required=True, choices=("textcat", "ner", "spancat"))
    p.add_argument("--gold", type=Path, help="a gold .spacy: the dev set and the report's test")
    p.add_argument("--review-fraction", type=float, default=0.2, help="share of docs to review")
    p.add_argument(
        "--corrections", type=Path, help="the corrected queue (Prodigy JSONL / Label Studio JSON)"
    )
    p.add_argument("--dev-fraction", type=float, default=0.2, help="held-out share without --gold")
    p.add_argument("--max-steps", type=int, default=2000, help="the student's training steps")
    p.add_argument("--eval-frequency", type=int, default=100, help="steps between dev evaluations")
    p.add_argument(
        "--curve",
        type=_fractions,
        default=(0.25, 0.5),
        help="learning-curve shares, e.g. 0.25,0.5 (100%% is the student)",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="a ner student starts untrained, not from the teacher pipeline's NER",
    )
    p.add_argument("--batch-size", type=int, help="the teacher's docs per batch")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    takes_overrides(p, run, hint=" Finished steps are saved; run the same command to continue.")


def _fractions(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a comma-separated list of shares, e.g. 0.25,0.5"
        ) from None
    if any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError("each share must be in (0, 1]")
    return values


def run(args: argparse.Namespace) -> int:
    return run_with_overrides(args, lambda overrides: _distill(args, overrides))


def _distill(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from ..distill.run import DistillOptions, distill

    opts = DistillOptions(
        teacher=args.teacher,
        input=args.input,
        output_dir=args.output_dir,
        student=args.student,
        gold=args.gold,
        review_fraction=args.review_fraction,
        corrections=args.corrections,
        overrides=overrides,
        dev_fraction=args.dev_fraction,
        max_steps=args.max_steps,
        eval_frequency=args.eval_frequency,
        curve=args.curve,
        batch_size=args.batch_size,
        warm_start=not args.from_scratch,
        quiet=args.quiet,
    )
    report = distill(opts)
    t, s = report["teacher"], report["student"]
    tf = "-" if t["scores"]["f"] is None else f"{100 * t['scores']['f']:.1f}"
    sf = "-" if s["scores"]["f"] is None else f"{100 * s['scores']['f']:.1f}"
    print(
        f"[spacy-llama] distill: student {s['model']} ({s['scores']['metric']} {sf} vs the "
        f"teacher's {tf} on {report['eval_set']}; {s['docs_per_second']:.0f} vs "
        f"{t['docs_per_second']:.2f} docs/s). Report: {args.output_dir / 'report.html'}",
        file=sys.stderr,
    )
    return EXIT_OK
