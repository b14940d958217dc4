"""Write the ``train`` workflow's report: ``spacy evaluate`` metrics of the trained
pipeline on the test split as a Markdown table, next to the zero-shot pipeline's (the same
config, adapters untrained) when given.

    python scripts/train_report.py outputs/train_metrics.json outputs/train_report.md \
        --baseline outputs/zero_shot_metrics.json --meta training/textcat/model-best/meta.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

HEADLINE = ("cats_score", "cats_macro_f", "cats_micro_f", "cats_macro_auc")


def read_json(path: Optional[Path]) -> Dict[str, Any]:
    if path is None:
        return {}
    return dict(json.loads(path.read_text(encoding="utf8")))


def fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    return "-"


def rows(trained: Dict[str, Any], baseline: Dict[str, Any]) -> List[List[str]]:
    """One row per headline figure, then per category F."""
    out = [[k, fmt(baseline.get(k)), fmt(trained.get(k))] for k in HEADLINE if k in trained]
    per = trained.get("cats_f_per_type") or {}
    base_per = baseline.get("cats_f_per_type") or {}
    for label in sorted(per):
        out.append([f"F {label}", fmt(base_per.get(label, {}).get("f")), fmt(per[label]["f"])])
    return out


def report(trained: Dict[str, Any], baseline: Dict[str, Any], meta: Dict[str, Any]) -> str:
    lines = ["# Training report", ""]
    if meta:
        dev = fmt((meta.get("performance") or {}).get("cats_score"))
        name = f"{meta.get('name', '?')} {meta.get('version', '')}"
        lines += [f"Pipeline `{name}`; dev cats_score at the best step: {dev}.", ""]
    lines += ["Test split (spacy evaluate; figures in %):", ""]
    lines += ["| metric | zero-shot | trained |", "|---|---:|---:|"]
    lines += [f"| {' | '.join(r)} |" for r in rows(trained, baseline)]
    speed = trained.get("speed")
    if speed:
        lines += ["", f"Evaluation speed of the trained pipeline: {speed:.0f} words/s."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="spacy evaluate --output, trained pipeline")
    parser.add_argument("output", type=Path, help="the Markdown report to write")
    parser.add_argument("--baseline", type=Path, default=None, help="the zero-shot metrics")
    parser.add_argument("--meta", type=Path, default=None, help="the trained pipeline's meta.json")
    args = parser.parse_args(argv)
    text = report(read_json(args.metrics), read_json(args.baseline), read_json(args.meta))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
