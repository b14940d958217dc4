"""``python -m spacy_llama evaluate CONFIG_OR_PIPELINE GOLD [--limit N] [--output F] [--sec.key v]``

Runs the pipeline on the texts of a gold set (.spacy DocBin, or .jsonl with "text", "cats"
and "ents" as [start, end, label] character offsets) and prints precision, recall and F per
label for every llama component whose task can score itself (TextCat: doc.cats; EntityReview
and NER: entities over the task's labels). Exit codes: 0 done, 2 input/config problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

EXIT_USAGE = 2


class GoldError(ValueError):
    """The gold file cannot be read; the message names the file and record."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score the llama tasks of a pipeline against a gold set (P/R/F per label)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="a .cfg (assembled on the fly) or a pipeline folder")
    p.add_argument("gold", type=Path, help="gold .spacy (DocBin) or .jsonl")
    p.add_argument("--limit", type=int, help="only the first N gold documents")
    p.add_argument("--output", type=Path, help="also write the scores as JSON")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from spacy.cli._util import parse_config_overrides

    from ..batch_pipeline import PipelineError, load_pipeline

    try:
        overrides = parse_config_overrides(list(getattr(args, "overrides_argv", [])))
    except SystemExit:
        return EXIT_USAGE
    try:
        nlp = load_pipeline(args.config, overrides=overrides)
        gold = read_gold(args.gold, nlp)[: args.limit]
    except (PipelineError, GoldError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    scores = evaluate(nlp, gold)
    print(format_scores(scores))
    if args.output is not None:
        srsly.write_json(args.output, scores)
    return 0


def read_gold(path: Path, nlp: Language) -> List[Doc]:
    """Gold docs from a DocBin (.spacy) or from JSONL records."""
    if not path.exists():
        raise GoldError(f"Gold file {str(path)!r} does not exist.")
    if path.suffix == ".spacy":
        return list(DocBin().from_disk(path).get_docs(nlp.vocab))
    if path.suffix != ".jsonl":
        raise GoldError(f"Gold file {str(path)!r}: use .spacy or .jsonl.")
    docs = []
    for i, rec in enumerate(srsly.read_jsonl(path)):
        doc = nlp.make_doc(rec["text"])
        doc.cats = dict(rec.get("cats", {}))
        spans = [doc.char_span(s, e, label=lab) for s, e, lab in rec.get("ents", [])]
        if any(s is None for s in spans):
            raise GoldError(f"Record {i} of {str(path)!r}: an entity is not on token boundaries.")
        doc.ents = spans  # type: ignore[assignment]
        docs.append(doc)
    return docs


def evaluate(nlp: Language, gold: List[Doc], *, batch_size: int = 32) -> Dict[str, Any]:
    """Run ``nlp`` on the gold texts and collect the scores of every self-scoring llama task."""
    predicted = list(nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=batch_size))
    examples = [Example(p, g) for p, g in zip(predicted, gold)]
    scores: Dict[str, Any] = {"n_docs": len(examples)}
    for _, proc in nlp.pipeline:
        score = getattr(getattr(proc, "task", None), "score", None)
        if score is not None:
            scores.update(score(examples))
    return scores


def format_scores(scores: Dict[str, Any]) -> str:
    """Per-label tables for cats and entities, followed by the overall figures."""
    lines: List[str] = [f"documents: {scores.get('n_docs')}"]
    if "cats_f_per_type" in scores:
        lines += ["", "Text classification"]
        lines += _table(scores["cats_f_per_type"])
        lines.append(f"macro F {_pct(scores.get('cats_macro_f'))}")
        lines.append(f"micro F {_pct(scores.get('cats_micro_f'))}")
    if "ents_per_type" in scores:
        lines += ["", "Entities (exact match)"]
        lines += _table(scores["ents_per_type"])
        lines.append(
            f"micro P {_pct(scores.get('ents_p'))}  R {_pct(scores.get('ents_r'))}  "
            f"F {_pct(scores.get('ents_f'))}"
        )
    if scores.get("llama_review_acc") is not None:
        lines.append(
            f"review label accuracy on exact-match spans: {_pct(scores['llama_review_acc'])} "
            f"(n={scores['llama_review_n']})"
        )
    if scores.get("llama_perplexity") is not None:
        lines.append(f"mean perplexity: {scores['llama_perplexity']:.2f}")
    return "\n".join(lines)


def _table(per_type: Dict[str, Dict[str, float]]) -> List[str]:
    rows = [f"{'label':<16}{'P':>8}{'R':>8}{'F':>8}"]
    for label in sorted(per_type):
        v = per_type[label]
        rows.append(f"{label:<16}{_pct(v['p']):>8}{_pct(v['r']):>8}{_pct(v['f']):>8}")
    return rows


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
