"""benchmarks/distill.py end to end with the real teacher on 3 docs of each split: the JSON
it writes holds scores in [0, 1] and ratios that are the ratios of its own numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_distill_benchmark_runs_on_a_few_docs(smollm2, tmp_path):
    from benchmarks import distill

    out = tmp_path / "results.json"
    argv = ["--limit", "3", "--max-steps", "2", "--eval-frequency", "1", "--curve", ""]
    assert distill.main([*argv, "--work", str(tmp_path / "work"), "--output", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert (result["input_docs"], result["test_docs"]) == (3, 3)
    assert 0.0 <= result["teacher_f"] <= 1.0 and 0.0 <= result["student_f"] <= 1.0
    teacher, student = result["teacher_docs_per_second"], result["student_docs_per_second"]
    assert teacher > 0 and student > 0
    assert result["speedup"] == pytest.approx(student / teacher)
    if result["teacher_f"]:
        assert result["score_ratio"] == pytest.approx(result["student_f"] / result["teacher_f"])
    for key in ("queue_error_in", "queue_error_out"):
        assert result[key] is None or 0.0 <= result[key] <= 1.0
    assert result["student_size_bytes"] > 0 and result["run_seconds"] > 0
