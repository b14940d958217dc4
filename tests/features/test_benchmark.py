"""benchmarks/features.py runs end to end on the tiny model: ours moves a doc's features by
exactly 0 when it is batched, and spacy-transformers' TransformerModel.v3 stops where a
LLaMA tokenizer without a pad token makes it stop (the failure is reported, not raised)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_features_benchmark_reports_each_system(tiny_hf, capsys) -> None:
    from benchmarks import features

    assert features.main(["--model", str(tiny_hf), "--docs", "8", "--batch", "4"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["spacy-llama"].rstrip(" |").endswith("| 0")
    assert float(rows["plain"].split("|")[2]) > 0
    assert "failed: ValueError: Asking to pad" in rows["spacy-transformers"]


def test_features_benchmark_times_cached_epochs(tiny_hf, capsys) -> None:
    from benchmarks import features

    args = ["--model", str(tiny_hf), "--skip-systems", "--epochs", "2"]
    assert features.main(args) == 0
    out = capsys.readouterr().out
    assert "| off |" in out and "| on |" in out
    assert "speed-up:" in out and "(the same dev macro F: True)" in out
