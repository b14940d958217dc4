"""benchmarks/scale.py at a tiny shape: the model builders write GGUF files whose random raw
blocks de-quantise to N(0, 0.02)-like weights and that llama.cpp loads; one quick run measures
both engines and writes JSON whose ratios are the ratios of its own numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_K", "Q6_K"])
def test_random_blocks_dequantize_to_small_centred_weights(kind):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from benchmarks import scale

    rng = np.random.default_rng(1)
    raw = scale.random_blocks(kind, 256 * 512, rng)
    w = dequantize(raw.reshape(-1), GGMLQuantizationType[kind])
    assert w.size == 256 * 512 and np.isfinite(w).all()
    assert abs(float(w.mean())) < 0.003
    assert 0.015 < float(w.std()) < 0.025


def test_builders_write_files_of_the_right_types_and_vocabularies(work):
    from gguf import GGUFReader

    from benchmarks import scale

    built = scale.build(work, quick=True, skip=set())
    files = built["files"]
    assert set(files) == {
        "tiny-Q8_0.gguf",
        "tiny-Q4_0.gguf",
        "tiny-Q4_K.gguf",
        "tiny-hf",
        "tiny-untied-Q4_K.gguf",
    }
    for kind, scheme in scale.SCHEMES.items():
        reader = GGUFReader(files[f"tiny-{kind}.gguf"]["path"])
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        assert types["blk.0.ffn_down.weight"] == scheme["proj"]
        assert types["token_embd.weight"] == scheme["embd"]
        assert "output.weight" not in types  # tied
        assert len(reader.fields["tokenizer.ggml.tokens"].data) == scale.TINY.vocab
    big = GGUFReader(files["tiny-untied-Q4_K.gguf"]["path"])
    types = {t.name: t.tensor_type.name for t in big.tensors}
    assert types["output.weight"] == "Q6_K" and types["blk.1.attn_k.weight"] == "Q4_K"
    # the token list is padded to the vocabulary with dummy tokens
    assert len(big.fields["tokenizer.ggml.tokens"].data) == scale.TINY_UNTIED.vocab
    hf = Path(files["tiny-hf"]["path"])
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    assert len(index["weight_map"]) == scale.TINY.layers * 9 + 2
    assert json.loads((hf / "config.json").read_text())["tie_word_embeddings"] is True
    # built once: a second build leaves the files alone
    mtime = Path(files["tiny-Q4_0.gguf"]["path"]).stat().st_mtime_ns
    scale.build(work, quick=True, skip=set())
    assert Path(files["tiny-Q4_0.gguf"]["path"]).stat().st_mtime_ns == mtime


def test_quick_run_reports_consistent_numbers(work):
    """One quick run (children processes): GGUF.v2 and llama.cpp on the tiny Q4_0 file, the
    float32 path, the untied file under the 16 GiB budget; quality left out (it loads the
    real SmolLM2 twice)."""
    from benchmarks import scale

    out = work / "scale.json"
    argv = ["--quick", "--work", str(work), "--json", str(out), "--skip", "quality"]
    argv.append("--dense")
    assert scale.main(argv) == 0
    report = json.loads(out.read_text())
    rows = {row["label"]: row["result"] for row in report["rows"]}
    ours, cpp = rows["GGUF.v2 Q4_0 (auto)"], rows["llama.cpp Q4_0"]
    for result in (ours, cpp, rows["HF.v1 float32 (bf16 folder)"]):
        assert "error" not in result, result
        assert result["peak_load_rss_gib"] >= result["rss_imports_gib"] > 0
        for run in result["runs"].values():
            assert 0 < run["tokens"] <= run["docs"] * 4
            assert run["tok_s"] == pytest.approx(run["tokens"] / run["seconds"])
    assert cpp["vocab_matches"] is True
    assert ours["activation_dtype"].startswith("torch.")
    # the default (auto) at batches below qlinear.DENSE_MIN_SLOTS and the kernel-only row:
    # every row on the kernel; the dense row: prompts on the dense GEMM, generated tokens on
    # the kernel
    dense = rows["GGUF.v2 Q4_0 (dense prompts)"]
    for run in dense["runs"].values():
        assert run["projection_calls"]["dense"] > 0 and run["projection_calls"]["kernel"] > 0
    for result in (ours, rows["GGUF.v2 Q4_0 (kernel only)"]):
        for run in result["runs"].values():
            assert "dense" not in run["projection_calls"]
            assert run["projection_calls"]["kernel"] > 0
    # int4 projections: the weights held are far below float32's
    fp32 = rows["HF.v1 float32 (bf16 folder)"]
    assert ours["weights_gib"] < fp32["weights_gib"] / 3
    targets = report["targets"]["Q4_0"]
    for batch, factor in (("1", 0.9), ("2", 1.5)):
        t = targets[f"batch {batch} tok/s >= {factor} x llama.cpp"]
        mine, theirs = ours["runs"][batch]["tok_s"], cpp["runs"][batch]["tok_s"]
        assert t["vs_llama_cpp"] == pytest.approx(mine / theirs)
        assert t["ratio"] == pytest.approx(mine / (factor * theirs))
        assert t["met"] == (mine >= factor * theirs)
    load = targets["peak_load_rss <= 1.3 x file + 1 GiB"]
    file_gib = report["files"]["tiny-Q4_0.gguf"]["bytes"] / 2**30
    assert load["bound"] == pytest.approx(1.3 * file_gib + 1)
    assert load["value"] == pytest.approx(ours["peak_load_rss_gib"])
    bw = targets["batch 1 bandwidth >= 60% of measured"]
    assert bw["reached_gbs"] == pytest.approx(
        ours["weight_bytes_per_token"] * ours["runs"]["1"]["tok_s"] / 1e9
    )
    assert bw["bound"] == pytest.approx(0.6 * report["bandwidth"]["read_gbs"]) and bw["bound"] > 0
    # llama.cpp loaded and ran every other file; the untied one with its padded vocabulary
    checks = report["llama_cpp_checks"]
    assert set(checks) == {"tiny-Q8_0.gguf", "tiny-Q4_K.gguf"}
    assert all(c["vocab_matches"] and c["generated"] > 0 for c in checks.values())
    big = {row["label"]: row["result"] for row in report["rows"]}["llama.cpp tiny-untied Q4_K"]
    assert big["vocab_matches"] is True
    assert report["big"]["met"] is True
    assert report["cpu"]["llama_cpp_build"].startswith("llama-cpp-python portable wheel")
