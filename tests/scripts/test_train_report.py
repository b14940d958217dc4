"""scripts/train_report.py: the train workflow's Markdown table, zero-shot next to trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]


def _module():
    path = ROOT / "scripts" / "train_report.py"
    spec = importlib.util.spec_from_file_location("train_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_tables_zero_shot_and_trained_scores(tmp_path) -> None:
    trained = {"cats_score": 0.5, "cats_micro_f": 0.6, "speed": 120.0,
               "cats_f_per_type": {"sport": {"p": 1, "r": 0.5, "f": 0.75}}}  # fmt: skip
    baseline = {"cats_score": 0.25, "cats_f_per_type": {"sport": {"f": 0.1}}}
    paths = []
    for name, data in (("t", trained), ("b", baseline), ("m", {"name": "p", "version": "1"})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data), encoding="utf8")
    out = tmp_path / "r" / "report.md"
    argv = [str(paths[0]), str(out), "--baseline", str(paths[1]), "--meta", str(paths[2])]
    assert _module().main(argv) == 0
    text = out.read_text(encoding="utf8")
    assert table(text) == {  # percentages: zero-shot, trained; None where there is none
        "cats_score": (25.0, 50.0),
        "cats_micro_f": (None, 60.0),
        "F sport": (10.0, 75.0),
    }
    assert "Pipeline `p 1`" in text and "120 words/s" in text


def table(markdown: str) -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """The report's score rows: metric -> (zero-shot, trained) as numbers."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (cells[1] == "-" or _number(cells[1]) is not None):
            rows[cells[0]] = (_number(cells[1]), _number(cells[2]))
    return rows


def _number(cell: str) -> Optional[float]:
    try:
        return float(cell)
    except ValueError:
        return None
