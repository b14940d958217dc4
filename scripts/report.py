"""Summarise an annotate output and ``spacy evaluate`` metrics as a Markdown report.

    python scripts/report.py outputs/sample.jsonl outputs/metrics.json outputs/report.md

The report lists how many documents were annotated (and failed), the entity labels found,
the completions' lengths with a few examples, and the NER scores on the gold set.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

EXAMPLES = 5


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def completion_fields(records: List[Dict[str, Any]]) -> List[str]:
    """The llama components' text outputs (``llama_completion`` and the like)."""
    return sorted(
        {k for r in records for k, v in r.items() if k.startswith("llama_") and isinstance(v, str)}
    )


def annotations_section(records: List[Dict[str, Any]], failed: int) -> List[str]:
    labels = Counter(ent[2] for r in records for ent in r.get("ents", []))
    lines = ["## Annotations", "", f"- documents annotated: {len(records)}", f"- failed: {failed}"]
    lines.append(f"- entities: {sum(labels.values())} ({_counts(labels)})")
    for name in completion_fields(records):
        words = [len(str(r.get(name, "")).split()) for r in records]
        mean = sum(words) / max(len(words), 1)
        lines.append(f"- `{name}`: {mean:.1f} words on average, {words.count(0)} empty")
    lines += ["", "### Examples", ""]
    for r in records[:EXAMPLES]:
        lines.append(f"**{r.get('id')}**: {_clip(str(r.get('text', '')))}")
        ents = ", ".join(f"{r['text'][s:e]} ({label})" for s, e, label, *_ in r.get("ents", []))
        lines.append(f"- entities: {ents or '(none)'}")
        for name in completion_fields(records):
            lines.append(f"- {name}: {_clip(str(r.get(name, '')).strip()) or '(empty)'}")
        lines.append("")
    return lines


def metrics_section(metrics: Dict[str, Any]) -> List[str]:
    lines = ["## NER on the gold set", ""]
    if metrics.get("ents_f") is None:
        return lines + ["No NER scores in the metrics (the pipeline has no `ner`).", ""]
    lines += [
        "| | precision | recall | F1 |",
        "| --- | ---: | ---: | ---: |",
        _row("all", metrics),
    ]
    zero = []
    for label, scores in sorted((metrics.get("ents_per_type") or {}).items()):
        if not any(scores.get(k) for k in ("p", "r", "f")):
            zero.append(label)  # predicted, never right: usually a type the gold never uses
            continue
        lines.append(_row(label, scores))
    if zero:
        lines += ["", f"No correct prediction (omitted above): {', '.join(zero)}."]
    speed = metrics.get("speed")
    lines += ["", f"Speed: {speed:.0f} words/s." if speed else "", ""]
    return lines


def _row(name: str, scores: Dict[str, Any]) -> str:
    def pct(key: str) -> str:
        value = scores.get(f"ents_{key}", scores.get(key))
        return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"

    return f"| {name} | {pct('p')} | {pct('r')} | {pct('f')} |"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"


def _clip(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width] + "..."


def count_failed(annotations: Path) -> int:
    failed = annotations.with_name(annotations.name + ".failed.jsonl")
    return len(read_jsonl(failed)) if failed.exists() else 0


def build_report(annotations: Path, metrics_path: Optional[Path]) -> str:
    records = read_jsonl(annotations)
    lines = ["# spacy-llama report", "", f"Annotations: `{annotations}`", ""]
    lines += annotations_section(records, count_failed(annotations))
    if metrics_path is not None:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        lines += metrics_section(metrics)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path, help="annotate's .jsonl output")
    parser.add_argument("metrics", type=Path, help="spacy evaluate's --output JSON")
    parser.add_argument("report", type=Path, help="the Markdown file to write")
    args = parser.parse_args(argv)
    for path in (args.annotations, args.metrics):
        if not path.exists():
            parser.error(f"{path} does not exist")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(build_report(args.annotations, args.metrics), encoding="utf-8")
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
