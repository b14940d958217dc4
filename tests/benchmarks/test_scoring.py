"""benchmarks/scoring.py on a few docs: every way of scoring the candidates (one pass each,
batched passes, the Scorer on the fused decoder and on transformers' forward) gives the
summed log-probabilities of one pass per candidate (the A run)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_scoring_benchmark_agrees_with_whole_passes(smollm2, capsys):
    from benchmarks import scoring

    assert scoring.main(["--limit", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:2] in ("A ", "B ", "C ", "C-")]
    assert len(rows) == 4
    # the last column: the largest difference of summed log-probabilities against A
    assert all(float(row.split()[-1]) < 1e-3 for row in rows)
    # seconds and candidates per second of each run are positive, A's ratio to itself is 1
    assert all(float(row[44:].split()[0]) > 0 and float(row[44:].split()[1]) > 0 for row in rows)
    assert rows[0][44:].split()[2] == "1.0x"
