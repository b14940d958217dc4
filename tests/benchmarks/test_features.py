"""benchmarks/features.py runs end to end on the tiny model, judged on the numbers it reports
from: ours moves a doc's features by exactly 0 when it is batched, and spacy-transformers'
TransformerModel.v3 stops where a LLaMA tokenizer without a pad token makes it stop (the
failure is reported, not raised); with the feature cache on, cached epochs end with the same
dev macro F as without it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_features_benchmark_reports_each_system(tiny_hf, monkeypatch) -> None:
    from benchmarks import features

    seen: Dict[str, Dict[str, Any]] = {}
    report = features.report

    def report_spy(rows: Dict[str, Dict[str, Any]]) -> None:
        seen.update(rows)
        report(rows)

    monkeypatch.setattr(features, "report", report_spy)
    assert features.main(["--model", str(tiny_hf), "--docs", "8", "--batch", "4"]) == 0
    assert set(seen) == {"plain", "spacy-llama", "spacy-transformers"}
    assert seen["spacy-llama"]["drift"] == 0.0  # bit-identical alone and batched
    assert seen["plain"]["docs_per_s"] > 0 and seen["spacy-llama"]["docs_per_s"] > 0
    assert seen["spacy-transformers"]["error"].startswith("ValueError: Asking to pad")
    assert all(row["peak_rss_mb"] > 0 for row in seen.values())


def test_features_benchmark_times_cached_epochs(tiny_hf, monkeypatch) -> None:
    from benchmarks import features

    runs: List[Dict[str, Any]] = []
    run_epochs = features.run_epochs

    def run_epochs_spy(folder: Path, epochs: int) -> Dict[str, Any]:
        runs.append(run_epochs(folder, epochs))
        return runs[-1]

    monkeypatch.setattr(features, "run_epochs", run_epochs_spy)
    args = ["--model", str(tiny_hf), "--skip-systems", "--epochs", "2"]
    assert features.main(args) == 0
    off, on = runs  # the feature cache off, then on
    assert off["seconds"] > 0 and on["seconds"] > 0
    assert off["dev_macro_f"] is not None and off["dev_macro_f"] == on["dev_macro_f"]
