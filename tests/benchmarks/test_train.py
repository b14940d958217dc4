"""benchmarks/train.py on a tiny model: both training paths, the adapter size and the
inference runs (children processes), judged on the numbers the script reports from: the two
paths' step-0 losses agree, the adapter is a small share of the base weights, and the fused
decoder still runs after the adapters are merged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_train_benchmark_step0_losses_agree(tiny_hf, monkeypatch):
    from benchmarks import train

    seen: Dict[str, Any] = {}
    report = train.report

    def report_spy(spacy_run: Any, plain: Any, infer: Any, args: Any) -> int:
        seen.update(spacy=spacy_run, plain=plain, infer=infer)
        return report(spacy_run, plain, infer, args)

    monkeypatch.setattr(train, "report", report_spy)
    argv = ["--model-path", str(tiny_hf), "--steps", "1", "--batch", "2", "--limit", "2"]
    assert train.main([*argv, "--repeat", "1"]) == 0
    ours, plain, infer = seen["spacy"], seen["plain"], seen["infer"]
    loss = plain["first_loss"]
    assert abs(ours["first_loss"] - loss) <= 1e-3 * max(1.0, abs(loss))
    for run in (ours, plain):
        assert run["docs"] > 0 and run["tokens"] > 0 and run["seconds"] > 0
        assert run["forwarded"] > 0 and run["peak_rss"] > 0
    assert 0 < ours["adapter_bytes"] < ours["base_bytes"]
    assert infer["fused_before"] is True and infer["fused_after"] is True
    assert infer["before"] > 0 and infer["after"] > 0
    assert infer["lora_b_max"] > 0  # the update moved the adapter that was merged
