"""benchmarks/spacy_llm_batching.py on the tiny model: A (``nlp(text)`` per doc) calls the
engine once per doc, B (``nlp.pipe``) once per batch with every prompt of the batch; both
runs answer every doc, and the speed-up is the ratio of the runs' own seconds."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_batching_benchmark_runs_end_to_end(tiny_long, capsys, monkeypatch, tmp_path):
    from benchmarks import spacy_llm_batching

    runs: List[List[str]] = []
    answers = spacy_llm_batching.answers

    def answers_spy(docs: Any) -> List[str]:
        runs.append(answers(docs))
        return runs[-1]

    monkeypatch.setattr(spacy_llm_batching, "answers", answers_spy)
    args = ["--limit", "3", "--max-new-tokens", "4", "--batch-size", "2"]
    report = tmp_path / "batching.json"
    args += ["--model-path", str(tiny_long), "--json", str(report)]
    assert spacy_llm_batching.main(args) == 0
    one_by_one, batched = runs
    assert len(one_by_one) == len(batched) == 3
    out = capsys.readouterr().out
    calls = re.search(r"engine calls: A (\d+), B (\d+) \(prompts per call: \[([\d, ]*)\]\)", out)
    assert calls is not None, out
    assert (int(calls[1]), int(calls[2])) == (3, 2)
    assert [int(x) for x in calls[3].split(",")] == [2, 1]
    rates = [float(x) for x in re.findall(r"^[AB] .* s +([\d.]+) docs/s$", out, re.M)]
    speed_up = float(re.search(r"B / A speed-up: ([\d.]+)x", out)[1])  # type: ignore[index]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    # seconds A / seconds B = docs/s B / docs/s A (printed to 2 decimals, the ratio to 1)
    assert abs(speed_up - rates[1] / rates[0]) <= 0.05 + 0.01 * speed_up
    same = int(re.search(r"same answer both ways: (\d+)/3", out)[1])  # type: ignore[index]
    assert same == sum(a == b for a, b in zip(one_by_one, batched))
    # the JSON report: the same counts, and both ratios (wall clock and CPU time) as the
    # quotients of the runs' own numbers
    got = json.loads(report.read_text())
    assert (got["docs"], got["engine_calls_a"], got["engine_calls_b"], got["same"]) == (
        3, 3, 2, same,
    )
    assert got["speedup"] == got["seconds_a"] / got["seconds_b"] > 0
    assert got["speedup_cpu"] == got["cpu_a"] / got["cpu_b"] > 0
