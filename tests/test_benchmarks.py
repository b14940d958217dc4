"""The benchmark scripts run end to end on a few docs and keep their equality checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spacy_llama.models.cpu_features import cpu_features

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
    # the bf16 peak is measured only where the CPU runs bf16 on oneDNN's kernels
    assert ("/ bf16 " in out) == cpu_features().onednn_bf16
    assert ("(matmul bf16 not measured" in out) != cpu_features().onednn_bf16


def test_machine_limits_skip_what_the_cpu_runs_on_reference_kernels(avx2_cpu, capsys):
    """Without oneDNN's bf16 path a 2048x2048 bf16 matmul runs for minutes (make test took
    14 minutes on an AVX2 machine): the probe is skipped, and says why."""
    from benchmarks import throughput

    limits = throughput.machine_limits()
    out = capsys.readouterr().out
    assert "matmul_bf16_gflops" not in limits and limits["matmul_fp32_gflops"] > 0
    assert "(matmul bf16 not measured: this CPU" in out and "AVX-512" in out


def test_throughput_report_without_a_peak_for_its_dtype(smollm2, avx2_cpu, capsys):
    """A bf16 run on a CPU without oneDNN bf16: its compute bounds are unknown, not a crash.
    On a real AVX2-only CPU this runs bf16 on the reference kernels: one doc, two tokens, about
    10-25 s (measured here under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)."""
    from benchmarks import throughput

    argv = ["--limit", "1", "--max-new-tokens", "2", "--skip", "A,B,D", "--dtype", "bfloat16"]
    assert throughput.main(argv) == 0
    out = capsys.readouterr().out
    assert "(matmul bf16 not measured" in out and "large-batch compute - tok/s" in out
    assert "(no ceiling: no bfloat16 matmul peak measured on this CPU)" in out
    [row] = [line for line in out.splitlines() if line.startswith("C  spacy-llama")]
    assert row.split()[-3:-1] == ["-", "-"]  # of compute bound, incl. prompts


def test_scoring_benchmark_agrees_with_whole_passes(smollm2, capsys):
    from benchmarks import scoring

    assert scoring.main(["--limit", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:2] in ("A ", "B ", "C ", "C-")]
    assert len(rows) == 4
    # the last column: the largest difference of summed log-probabilities against A
    assert all(float(row.split()[-1]) < 1e-3 for row in rows)


def test_grammar_engines_benchmark_measures_llguidance(smollm2, capsys):
    """The engine comparison runs on SmolLM2's vocabulary: llguidance (the dependency) is
    measured, through the engine's own grammar module; the others are reported as not
    installed where they are not."""
    import importlib.util

    from benchmarks import grammar_engines

    assert grammar_engines.main(["--repeat", "1", "--rows", "4"]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("llguidance")]
    assert len(row.split()) == 6 and float(row.split()[3]) > 0
    for name, module in (("xgrammar", "xgrammar"), ("outlines-core", "outlines_core")):
        missing = importlib.util.find_spec(module) is None
        assert (f"{name:14} not installed" in out) == missing


def test_train_benchmark_runs_and_checks_the_step0_losses_agree(tiny_hf, capsys):
    """benchmarks/train.py on a tiny model: both training paths, the adapter size and the
    inference runs (children processes); the two paths' step-0 losses must be equal."""
    from benchmarks import train

    argv = ["--model-path", str(tiny_hf), "--steps", "1", "--batch", "2", "--limit", "2"]
    code = train.main([*argv, "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "step-0 loss spacy == plain: yes" in out
    for line in ("training speed spacy / plain:", "peak RSS spacy / plain:", "adapter on disk:"):
        assert line in out
    assert "(fused decoder: True): after / before" in out


def test_distill_benchmark_runs_on_a_few_docs(smollm2, tmp_path, capsys):
    """benchmarks/distill.py end to end with the real teacher on 3 docs of each split."""
    import json

    from benchmarks import distill

    out = tmp_path / "results.json"
    argv = ["--limit", "3", "--max-steps", "2", "--eval-frequency", "1", "--curve", ""]
    assert distill.main([*argv, "--work", str(tmp_path / "work"), "--output", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert (result["input_docs"], result["test_docs"]) == (3, 3)
    assert 0.0 <= result["teacher_f"] <= 1.0 and 0.0 <= result["student_f"] <= 1.0
    assert result["teacher_docs_per_second"] > 0 and result["student_docs_per_second"] > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "in the queue" in printed
