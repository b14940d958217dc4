"""benchmarks/spacy_llm_batching.py on the tiny model: A (``nlp(text)`` per doc) calls the
engine once per doc, B (``nlp.pipe``) once per batch with every prompt of the batch; both
runs answer every doc, and the speed-up is the ratio of the runs' own seconds."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_batching_benchmark_runs_end_to_end(tiny_long, capsys, monkeypatch):
    from benchmarks import spacy_llm_batching

    runs: List[List[str]] = []
    answers = spacy_llm_batching.answers

    def answers_spy(docs: Any) -> List[str]:
        runs.append(answers(docs))
        return runs[-1]

    monkeypatch.setattr(spacy_llm_batching, "answers", answers_spy)
    args = ["--limit", "3", "--max-new-tokens", "4", "--batch-size", "2"]
    assert spacy_llm_batching.main([*args, "--model-path", str(tiny_long)]) == 0
    one_by_one, batched = runs
    assert len(one_by_one) == len(batched) == 3
    out = capsys.readouterr().out
    calls = re.search(r"engine calls: A (\d+), B (\d+) \(prompts per call: \[([\d, ]*)\]\)", out)
    assert calls is not None, out
    assert (int(calls[1]), int(calls[2])) == (3, 2)
    assert [int(x) for x in calls[3].split(",")] == [2, 1]
    seconds = [float(x) for x in re.findall(r"^[AB] .*?([\d.]+) s ", out, re.M)]
    speed_up = float(re.search(r"B / A speed-up: ([\d.]+)x", out)[1])  # type: ignore[index]
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert speed_up == round(seconds[0] / seconds[1], 1) or abs(
        speed_up - seconds[0] / seconds[1]
    ) < 0.05 + 0.01 * speed_up  # printed rounded: seconds to 0.1, speed-up to 0.1
    same = int(re.search(r"same answer both ways: (\d+)/3", out)[1])  # type: ignore[index]
    assert same == sum(a == b for a, b in zip(one_by_one, batched))
