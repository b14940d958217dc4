"""benchmarks/throughput.py on a few docs: the token ids of the runs it compares (A: generate
one doc at a time, B: generate batched, C: the component) are equal, its rates are the
ratios of its own counts, and the bf16 matmul peak is measured only where this CPU runs bf16
on oneDNN's kernels (elsewhere the report shows no compute bound instead of crashing)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from spacy_llama.models.cpu_features import cpu_features

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def spy(monkeypatch: pytest.MonkeyPatch, module: Any) -> Dict[str, Any]:
    """What the script measured: each timed run's token ids and seconds (in the order A, B,
    C), and the machine limits, as the script itself got them."""
    seen: Dict[str, Any] = {"runs": [], "limits": None}
    timed, limits = module.timed, module.machine_limits

    def timed_spy(fn: Any) -> Any:
        out = timed(fn)
        seen["runs"].append(out)
        return out

    def limits_spy() -> Dict[str, float]:
        seen["limits"] = limits()
        return seen["limits"]

    monkeypatch.setattr(module, "timed", timed_spy)
    monkeypatch.setattr(module, "machine_limits", limits_spy)
    return seen


def table(out: str) -> Dict[str, List[str]]:
    """The report's rows: run letter -> the columns after the run's name."""
    rows = {}
    for line in out.splitlines():
        if line[:3] in ("A  ", "B  ", "C  "):
            name, _, rest = line.partition("  ")
            rows[name] = line[44:].split()
    return rows


@pytest.mark.parametrize("prompts", ["task", "pipeline"])
def test_throughput_runs_are_equal_and_its_rates_are_its_counts(
    smollm2, capsys, monkeypatch, prompts
):
    from benchmarks import throughput

    seen = spy(monkeypatch, throughput)
    argv = ["--limit", "3", "--max-new-tokens", "6", "--skip", "D", "--prompts", prompts]
    assert throughput.main(argv) == 0
    (a, a_secs, _), (b, _, _), (c, _, _) = seen["runs"]
    assert len(a) == 3 and a == b == c  # greedy token ids, doc by doc
    assert all(0 < len(ids) <= 6 for ids in a)
    rows = table(capsys.readouterr().out)
    assert set(rows) == {"A", "B", "C"}
    docs_s, tok_s, vs_a = float(rows["A"][0]), float(rows["A"][1]), rows["A"][3]
    assert docs_s == pytest.approx(3 / a_secs, rel=0.01, abs=0.01)
    assert tok_s == pytest.approx(sum(map(len, a)) / a_secs, rel=0.01, abs=0.1)
    assert vs_a == "1.0x"
    # the bf16 peak is measured only where the CPU runs bf16 on oneDNN's kernels
    limits = seen["limits"]
    assert limits["matmul_fp32_gflops"] > 0 and limits["bandwidth_gbs"] > 0
    assert ("matmul_bf16_gflops" in limits) == cpu_features().onednn_bf16


def test_machine_limits_skip_what_the_cpu_runs_on_reference_kernels(avx2_cpu, capsys):
    """Without oneDNN's bf16 path a 2048x2048 bf16 matmul runs for minutes (make test took
    14 minutes on an AVX2 machine): the probe is skipped, and says why."""
    from benchmarks import throughput

    limits = throughput.machine_limits()
    out = capsys.readouterr().out
    assert "matmul_bf16_gflops" not in limits and limits["matmul_fp32_gflops"] > 0
    assert "(matmul bf16 not measured: this CPU" in out and "AVX-512" in out


def test_throughput_report_without_a_peak_for_its_dtype(smollm2, avx2_cpu, capsys, monkeypatch):
    """A bf16 run on a CPU without oneDNN bf16: its compute bounds are unknown, not a crash.
    On a real AVX2-only CPU this runs bf16 on the reference kernels: one doc, two tokens, about
    10-25 s (measured here under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)."""
    from benchmarks import throughput

    seen = spy(monkeypatch, throughput)
    argv = ["--limit", "1", "--max-new-tokens", "2", "--skip", "A,B,D", "--dtype", "bfloat16"]
    assert throughput.main(argv) == 0
    assert "matmul_bf16_gflops" not in seen["limits"]
    [(c, secs, _)] = seen["runs"]
    assert len(c) == 1 and 0 < len(c[0]) <= 2
    [row] = table(capsys.readouterr().out).values()
    assert float(row[1]) == pytest.approx(len(c[0]) / secs, rel=0.01, abs=0.1)  # gen tok/s
    assert row[-3:-1] == ["-", "-"]  # of compute bound, incl. prompts: no peak, no number
