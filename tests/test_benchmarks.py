"""The benchmark scripts run end to end on a few docs and keep their equality checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.mark.parametrize("prompts", ["task", "pipeline"])
def test_throughput_runs_and_checks_greedy_equality(smollm2, capsys, prompts):
    from benchmarks import throughput

    code = throughput.main(
        ["--limit", "3", "--max-new-tokens", "6", "--skip", "D", "--prompts", prompts]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "greedy outputs A == B: yes" in out and "greedy outputs A == C: yes" in out
    for run in ("A  generate", "B  generate", "C  spacy-llama"):
        assert run in out
    assert "ceiling of this workload" in out


def test_scoring_benchmark_agrees_with_whole_passes(smollm2, capsys):
    from benchmarks import scoring

    assert scoring.main(["--limit", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:2] in ("A ", "B ", "C ", "C-")]
    assert len(rows) == 4
    # the last column: the largest difference of summed log-probabilities against A
    assert all(float(row.split()[-1]) < 1e-3 for row in rows)
