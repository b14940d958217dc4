"""Quantized weights from the file to the matmul: GGUF block decoding (gguf-py's own
de-quantiser is the reference), the int4/int8 projections, the streaming loaders (GGUF.v2,
HF.v2), the memory check, and the engine on quantized layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from spacy_llama.errors import ModelLoadError
from spacy_llama.models import memory, qlinear
from spacy_llama.models.gguf import gguf_model_v1
from spacy_llama.models.gguf_blocks import INT4_TYPES, decode_float, decode_int4
from spacy_llama.models.gguf_stream import gguf_model_v2
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.hf_stream import hf_model_v2
from spacy_llama.models.loading import clear_loaded_models
from spacy_llama.models.qlinear import Int4Linear, Int8Embedding, Int8Linear, quantized_linear

from ..fixtures.tiny_gguf import make_tiny_gguf

Q = GGMLQuantizationType
IDS = torch.tensor([[1, 5, 9, 23, 44, 3, 7, 61, 2, 17]])


def random_blocks(qtype: GGMLQuantizationType, n: int, k: int, seed: int = 0) -> np.ndarray:
    """A valid tensor of ``qtype``: random codes, small finite f16 scales (every type stores
    its f16 scale(s) first in a block, the k-quants' d/dmin at the end or start as below)."""
    rng = np.random.default_rng(seed)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n * k // block, size), dtype=np.uint8)
    scales = {
        Q.Q4_0: [0],
        Q.Q4_1: [0, 2],
        Q.Q4_K: [0, 2],
        Q.Q8_0: [0],
        Q.Q5_K: [0, 2],
        Q.IQ4_NL: [0],
    }
    for at in scales.get(qtype, []):
        raw[:, at : at + 2] = (
            (rng.random((raw.shape[0], 1)) * 0.002).astype(np.float16).view(np.uint8)
        )
    if qtype == Q.Q6_K:  # d is the last 2 bytes
        raw[:, -2:] = (rng.random((raw.shape[0], 1)) * 0.002).astype(np.float16).view(np.uint8)
    return raw.reshape(n, -1)


# -- decoding: code for code against gguf-py -----------------------------------------
@pytest.mark.parametrize("qtype", sorted(INT4_TYPES, key=lambda t: t.name))
def test_int4_types_decode_to_the_files_own_codes(qtype) -> None:
    n, k = 32, 512
    raw = random_blocks(qtype, n, k)
    want = dequantize(raw, qtype).reshape(n, k)
    groups = decode_int4(raw.reshape(-1), qtype, (n, k))
    assert groups.q.min() >= 0 and groups.q.max() <= 15
    np.testing.assert_allclose(groups.dequantize(), want, rtol=0, atol=1e-6 * np.abs(want).max())


# Each kept type: the projection's matmul agrees with x @ dequantize(file).T within what the
# kept form adds (int4 codes are the file's own: bf16 activations and scales only; the
# 5-8-bit types are re-quantized to int8 per channel: half a step of the row's scale).
KEPT_CASES = [
    (Q.Q4_0, "int4", 0.02),
    (Q.Q4_1, "int4", 0.02),
    (Q.Q4_K, "int4", 0.02),
    (Q.Q8_0, "int8", 0.03),
    (Q.Q5_K, "int8", 0.03),
    (Q.Q6_K, "int8", 0.03),
    (Q.F16, "int8", 0.03),
]


@pytest.mark.parametrize("qtype,mode,tol", KEPT_CASES, ids=lambda v: getattr(v, "name", v))
def test_kept_type_matmul_agrees_with_gguf_dequantize(qtype, mode, tol) -> None:
    n, k = 48, 512
    if qtype == Q.F16:
        raw = (np.random.default_rng(1).standard_normal((n, k)) * 0.02).astype(np.float16)
        raw = raw.view(np.uint8)
    else:
        raw = random_blocks(qtype, n, k)
    reference = torch.from_numpy(dequantize(raw, qtype).reshape(n, k).astype(np.float32))
    if mode == "int4":
        g = decode_int4(raw.reshape(-1), qtype, (n, k))
        layer: torch.nn.Module = Int4Linear.from_groups(g.q, g.scale, g.zero)
    else:
        weight = torch.from_numpy(decode_float(raw.reshape(-1), qtype, (n, k)).copy())
        layer = Int8Linear.from_float(weight)
    x = torch.randn(5, k)
    want = x @ reference.T
    got = layer(x)
    assert got.shape == want.shape and got.dtype == x.dtype
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()


def test_dequantize_is_what_the_kernel_multiplies() -> None:
    w = torch.randn(32, 64) * 0.05
    # the rounding bound: half a step (int4: (max - min) / 15 per group; int8: max / 127)
    for layer, step in (
        (Int4Linear.from_float(w), 2 * 0.2 / 15),
        (Int8Linear.from_float(w), 0.2 / 127),
    ):
        x = torch.randn(3, 64)
        want = x @ layer.dequantize().T
        assert torch.allclose(layer(x), want, atol=2e-2 * want.abs().max().item())
        assert (layer.dequantize() - w).abs().max() < step


def test_int4_falls_back_to_int8_where_the_packing_cannot_hold_the_shape() -> None:
    assert isinstance(quantized_linear(torch.randn(8, 64), "int4"), Int8Linear)  # N % 16
    assert isinstance(quantized_linear(torch.randn(16, 48), "int4"), Int8Linear)  # K % 32
    assert isinstance(quantized_linear(torch.randn(16, 64), "int4"), Int4Linear)


def test_quantized_matmul_passes_gradients_to_its_input() -> None:
    w = torch.randn(32, 64) * 0.05
    for layer in (Int4Linear.from_float(w), Int8Linear.from_float(w)):
        x = torch.randn(3, 64, requires_grad=True)
        layer(x).pow(2).sum().backward()
        ref_x = x.detach().clone().requires_grad_(True)
        (ref_x @ layer.dequantize().T).pow(2).sum().backward()
        assert x.grad is not None and ref_x.grad is not None
        assert torch.allclose(x.grad, ref_x.grad, atol=0.05 * ref_x.grad.abs().max().item())


def test_int8_embedding_and_tied_head_share_one_copy() -> None:
    w = torch.randn(40, 32)
    emb = Int8Embedding.from_float(w, torch.float32)
    head = emb.head()
    assert head.q.data_ptr() == emb.q.data_ptr()
    ids = torch.tensor([[0, 3, 39]])
    assert torch.allclose(emb(ids), w[ids], atol=0.02 * w.abs().max().item())
    x = torch.randn(2, 32)
    assert torch.allclose(head(x), x @ w.T, atol=0.05 * (x @ w.T).abs().max().item())


# -- GGUF.v2 on tiny files -----------------------------------------------------------
@pytest.fixture(scope="module")
def gguf_files(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("qgguf")
    return {
        q: make_tiny_gguf(folder / f"{q or 'F32'}.gguf", tiny_hf, q)
        for q in (None, "F16", "Q8_0", "Q4_0", "Q4_1")
    }


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.model(IDS).logits.float()


def test_gguf_v2_without_quantize_equals_gguf_v1(gguf_files: dict, tmp_path: Path) -> None:
    v1 = gguf_model_v1(gguf_files[None], device="cpu", dtype="float32", cache_dir=tmp_path)
    v2 = gguf_model_v2(gguf_files[None], quantize=None)
    assert torch.allclose(logits(v2), logits(v1), atol=1e-4)
    assert v2.encode("The quick brown fox.") == v1.encode("The quick brown fox.")
    assert v2.stop_token_ids == v1.stop_token_ids
    assert not (tmp_path / "gguf").exists() or any((tmp_path / "gguf").iterdir())  # v1's cache
    assert v2.fingerprint != v1.fingerprint  # another computation, another cache key


@pytest.mark.parametrize(
    "qtype,kind", [("Q4_0", Int4Linear), ("Q4_1", Int4Linear), ("Q8_0", Int8Linear)]
)
def test_gguf_v2_keeps_the_files_types(gguf_files: dict, tmp_path: Path, qtype, kind) -> None:
    """quantize = auto keeps each type; its logits equal the file de-quantised to float
    (GGUF.v1, transformers' de-quantiser) within the kept form's rounding."""
    kept = gguf_model_v2(gguf_files[qtype])
    layer = kept.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, kind) and isinstance(layer.mlp.down_proj, kind)
    assert isinstance(kept.model.model.embed_tokens, Int8Embedding)
    floated = gguf_model_v1(gguf_files[qtype], device="cpu", dtype="float32", cache_dir=tmp_path)
    want, got = logits(floated), logits(kept)
    assert (got - want).abs().max().item() < 0.1 * want.abs().max().item()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= 0.8


def test_gguf_v2_quantize_choices(gguf_files: dict) -> None:
    f16 = gguf_files["F16"]
    assert isinstance(gguf_model_v2(f16).model.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    as8 = gguf_model_v2(f16, quantize="int8").model.model.layers[1].mlp.up_proj
    assert isinstance(as8, Int8Linear)
    as4 = gguf_model_v2(gguf_files["Q8_0"], quantize="int4").model.model.layers[1].mlp.up_proj
    assert isinstance(as4, Int4Linear)
    with pytest.raises(ModelLoadError, match="E903"):
        gguf_model_v2(f16, quantize="int3")
    with pytest.raises(ModelLoadError, match="E904"):
        gguf_model_v2(f16, device="cuda", quantize="int8")


def test_a_truncated_file_is_a_coded_error(gguf_files: dict, tmp_path: Path) -> None:
    data = gguf_files["Q4_0"].read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelLoadError, match=r"E154.*cut\.gguf.*truncated"):
        gguf_model_v2(bad)


def test_a_type_that_is_not_kept_is_decoded_for_that_tensor_alone(
    tiny_hf: Path, tmp_path: Path
) -> None:
    """One IQ4_NL tensor in a Q8_0 file: de-quantised to float with a warning that names
    it; the other tensors stay int8."""
    import gguf

    path = make_tiny_gguf(tmp_path / "q8.gguf", tiny_hf, "Q8_0")
    reader = gguf.GGUFReader(str(path))
    writer = gguf.GGUFWriter(str(tmp_path / "mixed.gguf"), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        writer.add_key_value(
            field.name,
            value,
            field.types[0],
            sub_type=(field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None),
        )
    for t in reader.tensors:
        n, k = (int(d) for d in reversed(t.shape)) if len(t.shape) == 2 else (0, 0)
        if t.name == "blk.0.ffn_down.weight":
            raw = random_blocks(Q.IQ4_NL, n, k)
            writer.add_tensor(t.name, raw, raw_shape=raw.shape, raw_dtype=Q.IQ4_NL)
        else:
            writer.add_tensor(
                t.name, np.array(t.data), raw_shape=np.array(t.data).shape, raw_dtype=t.tensor_type
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.warns(UserWarning, match=r"W900.*blk\.0\.ffn_down\.weight.*IQ4_NL"):
        model = gguf_model_v2(tmp_path / "mixed.gguf")
    layer = model.model.model.layers[0]
    assert type(layer.mlp.down_proj) is torch.nn.Linear
    assert isinstance(layer.mlp.up_proj, Int8Linear)


def test_non_finite_scales_are_a_coded_error(gguf_files: dict, tmp_path: Path) -> None:
    import gguf

    src = gguf_files["Q4_0"]
    reader = gguf.GGUFReader(str(src))
    target = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    data = bytearray(src.read_bytes())
    data[target.data_offset : target.data_offset + 2] = np.float16(np.nan).tobytes()
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"E906.*blk\.0\.ffn_up\.weight.*Q4_0.*non-finite"):
        gguf_model_v2(bad)


def test_a_model_too_big_fails_before_allocating(gguf_files: dict, monkeypatch) -> None:
    import gguf

    from spacy_llama.models import gguf_stream

    allocated = []
    monkeypatch.setattr(gguf_stream, "_Builder", lambda *a: allocated.append(a))
    tensors = gguf.GGUFReader(str(gguf_files["Q8_0"])).tensors
    n = sum(int(t.n_elements) for t in tensors)
    # room for the int4 form (~0.63 byte a weight), not for float32 (4 bytes)
    monkeypatch.setattr(memory, "available_memory", lambda: int(memory.HEADROOM + n * 1.5))
    with pytest.raises(ModelLoadError, match=r"E900.*need about .*float32.*is available") as e:
        gguf_model_v2(gguf_files["Q8_0"], quantize=None)
    assert "quantize = 'int4'" in str(e.value).split("would fit:")[1]
    assert "quantize = null" not in str(e.value).split("would fit:")[1]
    assert allocated == []  # failed before building anything
    clear_loaded_models()  # an earlier test loaded this file as int4
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 20)
    with pytest.raises(ModelLoadError, match=r"E900.*none on this machine"):
        gguf_model_v2(gguf_files["Q8_0"], quantize="int4")


# -- HF.v2 -----------------------------------------------------------------------------
def test_hf_v2_streams_float_and_quantized(tiny_hf: Path) -> None:
    ref = logits(hf_model_v1(tiny_hf, device="cpu", dtype="float32"))
    plain = hf_model_v2(tiny_hf, dtype="float32")
    assert torch.allclose(logits(plain), ref, atol=1e-5)
    # the tiny model's weights are wide (std 0.2): int4 groups of 32 are coarse on them
    for mode, kind, bound in (("int8", Int8Linear, 0.05), ("int4", Int4Linear, 0.5)):
        model = hf_model_v2(tiny_hf, quantize=mode)
        assert isinstance(model.model.model.layers[0].mlp.gate_proj, kind)
        got = logits(model)
        assert (got - ref).norm().item() < bound * ref.norm().item()
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.7
        assert not any(p.dtype == torch.float32 and p.dim() == 2 for p in model.model.parameters())


def test_dtype_auto_chooses_by_size(tiny_hf: Path, monkeypatch) -> None:
    from spacy_llama.models import hf_stream

    sizes = hf_stream.count_weights(tiny_hf)
    fp32 = hf_stream._need(sizes, "float32")
    monkeypatch.setattr(hf_stream, "available_memory", lambda: int(fp32 * 3 + memory.HEADROOM))
    assert hf_stream.choose(sizes, "auto", None, "x")[0] == torch.float32
    # float32 over half the memory: bf16 where native, else int8 projections
    monkeypatch.setattr(hf_stream, "available_memory", lambda: int(fp32 * 1.5 + memory.HEADROOM))
    act, mode, why, _ = hf_stream.choose(sizes, "auto", None, "x")
    assert (act, mode) in {(torch.bfloat16, None), (memory.auto_activation_dtype(), "int8")}
    assert "half the memory" in why
    # nothing but int8 fits
    monkeypatch.setattr(hf_stream, "available_memory", lambda: int(fp32 * 0.4 + memory.HEADROOM))
    act, mode, why, _ = hf_stream.choose(sizes, "auto", None, "x")
    assert mode == "int8" and "half the memory" in why
    # an explicit setting always wins
    assert hf_stream.choose(sizes, "float32", None, "x")[:2] == (torch.float32, None)


# -- the engine on quantized layers ----------------------------------------------------
def quantized_nlp(path: Path, batch_size: int = 8, **generation) -> spacy.language.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": {"@llama_models": "spacy-llama.GGUF.v2", "path": str(path)},
            "task": {"@llama_tasks": "spacy-llama.Completion.v1", "chat": False},
            "generation": {"max_new_tokens": 8, **generation},
            "batch_size": batch_size,
        },
    )
    return nlp


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Marie Curie won the Nobel Prize.",
    "A",
    "Rain, rain, go away; come again another day, said the child to the window.",
    "Paris",
]


def _batch_invariance(path: Path) -> None:
    qlinear.DENSE = True  # the callers' monkeypatch restores it
    nlp = quantized_nlp(path, batch_size=2)  # 5 docs on 2 slots: refills
    qlinear.DENSE_CALLS.clear()
    alone = [nlp(t)._.llama_completion for t in TEXTS]
    batched = [d._.llama_completion for d in nlp.pipe(TEXTS, batch_size=5)]
    reordered = [d._.llama_completion for d in nlp.pipe(TEXTS[::-1], batch_size=5)][::-1]
    assert alone == batched == reordered
    assert any(alone)
    # prompts took the dense GEMM, generated tokens the kernel: both paths ran
    assert qlinear.DENSE_CALLS["dense"] > 0 and qlinear.DENSE_CALLS["kernel"] > 0


def test_greedy_is_batch_invariant_on_quantized_layers(gguf_files: dict, monkeypatch) -> None:
    """The same doc gets the same tokens alone, in any batch, in any order (continuous
    batching, prefix cache and prompt lookup included), with the kernel alone and with
    prompts on the dense GEMM."""
    monkeypatch.setattr(qlinear, "DENSE", False)
    nlp = quantized_nlp(gguf_files["Q4_0"], batch_size=2)
    alone = [nlp(t)._.llama_completion for t in TEXTS]
    assert [d._.llama_completion for d in nlp.pipe(TEXTS[::-1], batch_size=5)][::-1] == alone
    _batch_invariance(gguf_files["Q4_0"])


def test_greedy_is_batch_invariant_with_the_float32_dense_path(
    gguf_files: dict, avx2_cpu, monkeypatch
) -> None:
    """The same on an AVX2-only CPU, where the prompts' dense GEMM runs in float32."""
    monkeypatch.setattr(qlinear, "DENSE", False)
    assert qlinear.dense_dtype() == torch.float32
    _batch_invariance(gguf_files["Q4_0"])


def test_auto_dense_prompts_follow_the_configured_batch_size(gguf_files: dict, monkeypatch) -> None:
    """``DENSE`` on auto (the default): prompt rows take the dense GEMM in runs configured for
    ``DENSE_MIN_SLOTS`` or more slots, where the CPU has a bf16 GEMM, and never below; a doc
    gets the same tokens alone and in a batch either way."""
    monkeypatch.setattr(qlinear, "DENSE", None)
    monkeypatch.setattr(qlinear, "dense_dtype", lambda: torch.bfloat16)
    path = gguf_files["Q4_0"]
    narrow = quantized_nlp(path, batch_size=qlinear.DENSE_MIN_SLOTS - 1)
    qlinear.DENSE_CALLS.clear()
    narrow_alone = [narrow(t)._.llama_completion for t in TEXTS]
    assert qlinear.DENSE_CALLS["dense"] == 0 and qlinear.DENSE_CALLS["kernel"] > 0
    wide = quantized_nlp(path, batch_size=qlinear.DENSE_MIN_SLOTS)
    qlinear.DENSE_CALLS.clear()
    alone = [wide(t)._.llama_completion for t in TEXTS]  # one doc, still a wide run
    assert qlinear.DENSE_CALLS["dense"] > 0 and qlinear.DENSE_CALLS["kernel"] > 0
    assert [d._.llama_completion for d in wide.pipe(TEXTS[::-1], batch_size=5)][::-1] == alone
    assert any(alone) and any(narrow_alone)
    # no native bf16 GEMM (an AVX2-only CPU): auto keeps every row on the kernel
    monkeypatch.setattr(qlinear, "dense_dtype", lambda: torch.float32)
    qlinear.DENSE_CALLS.clear()
    wide(TEXTS[0])
    assert qlinear.DENSE_CALLS["dense"] == 0


def _int4_layer(n: int = 128, k: int = 96, seed: int = 0) -> Int4Linear:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    scale = torch.rand(n, k // 32, generator=gen) * 0.01
    zero = (torch.rand(n, k // 32, generator=gen) - 0.5) * 0.02
    return Int4Linear(q, scale, zero)


def _int8_layer(n: int = 128, k: int = 96, seed: int = 0) -> Int8Linear:
    gen = torch.Generator().manual_seed(seed)
    return Int8Linear.from_float(torch.randn(n, k, generator=gen) * 0.02)


def test_int4_unpacking_equals_what_the_kernel_multiplies_by() -> None:
    """dequantize() unpacks the kernel's own packing: in bf16 it equals the kernel applied
    to the identity, bit for bit (and float32 rounds to it)."""
    layer = _int4_layer(192, 128)
    want = layer.kernel_dequantize(torch.bfloat16)
    assert torch.equal(layer.dequantize(torch.bfloat16), want)
    assert torch.equal(layer.dequantize(torch.float32).to(torch.bfloat16), want)
    odd = _int4_layer(48, 64)  # not blocks of 64 channels: the kernel's identity, no dense path
    assert torch.equal(odd.dequantize(torch.bfloat16), odd.kernel_dequantize(torch.bfloat16))
    assert not odd._dense_fits()


@pytest.mark.parametrize("make", [_int4_layer, _int8_layer], ids=["int4", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
def test_dense_path_uses_the_same_weights_and_agrees_with_the_kernel(make, dtype) -> None:
    layer = make()
    # the workspace holds exactly dequantize()'s weights
    assert torch.equal(layer._dense_weight_t(dtype), layer.dequantize(dtype).t())
    x = torch.randn(40, layer.in_features)
    rows = x.to(torch.bfloat16)
    kernel = layer._kernel(rows).float()
    dense = layer._dense(rows, dtype).float()
    scale = kernel.abs().max()
    # the kernel rounds its output to bf16 (2^-8); bf16 also rounds the weights
    tol = 2e-2 if dtype == torch.bfloat16 else 2**-8
    assert (dense - kernel).abs().max() <= tol * scale
    assert not torch.equal(dense, torch.zeros_like(dense))
    # one row alone gets the same numbers as in a batch (padded to a GEMM, not a GEMV)
    assert torch.equal(layer._dense(rows[3:4], dtype), layer._dense(rows, dtype)[3:4])


@pytest.mark.parametrize("make", [_int4_layer, _int8_layer], ids=["int4", "int8"])
def test_dense_path_is_taken_from_the_threshold_on(make, monkeypatch) -> None:
    layer = make()
    dtype = qlinear.dense_dtype()
    monkeypatch.setattr(qlinear, "DENSE", True)
    monkeypatch.setitem(qlinear.DENSE_MIN_ROWS, dtype, 24)
    qlinear.DENSE_CALLS.clear()
    with torch.inference_mode():
        small = layer(torch.randn(23, layer.in_features))
        assert qlinear.DENSE_CALLS == {"kernel": 1}
        big = layer(torch.randn(2, 12, layer.in_features))  # 24 rows
        assert qlinear.DENSE_CALLS == {"kernel": 1, "dense": 1}
        with qlinear.dense_rows("kernel"):  # generated rows: always the kernel
            layer(torch.randn(100, layer.in_features))
        with qlinear.dense_rows("dense"):  # prompt rows: always dense
            layer(torch.randn(1, layer.in_features))
    assert qlinear.DENSE_CALLS == {"kernel": 2, "dense": 2}
    assert small.shape == (23, layer.out_features) and big.shape == (2, 12, layer.out_features)
    monkeypatch.setattr(qlinear, "DENSE_MAX_WEIGHTS", layer.in_features * layer.out_features - 1)
    with torch.inference_mode():
        layer(torch.randn(100, layer.in_features))  # too large a buffer: the kernel
    assert qlinear.DENSE_CALLS["kernel"] == 3


@pytest.mark.parametrize("make", [Int4Linear.from_float, Int8Linear.from_float])
def test_fused_layers_equal_the_separate_ones_on_the_same_memory(make) -> None:
    """q/k/v (or gate/up) fused into one kernel call give, bit for bit, the concatenation of
    the separate calls; the separate layers still work and now read the fused tensors."""
    torch.manual_seed(0)
    layers = [make(torch.randn(n, 96) * 0.05) for n in (128, 64, 64)]
    x = torch.randn(5, 96)
    separate = torch.cat([lay(x) for lay in layers], dim=-1)
    before = sum(sum(t.numel() for t in lay.buffers()) for lay in layers)
    fused = qlinear.fuse(layers)
    assert fused is not None and fused.out_features == 256
    assert torch.equal(fused(x), separate)
    assert torch.equal(torch.cat([lay(x) for lay in layers], dim=-1), separate)
    fused_ptrs = {t.untyped_storage().data_ptr() for t in fused.buffers()}
    for lay in layers:  # views of the fused tensors: no second copy
        assert {t.untyped_storage().data_ptr() for t in lay.buffers()} <= fused_ptrs
    assert sum(t.numel() for t in fused.buffers()) == before
    assert qlinear.fuse(layers) is fused  # a second decoder reuses it
    # gradients still reach the input through a layer whose tensors are views
    xg = x.clone().requires_grad_(True)
    layers[1](xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_layers_that_do_not_stack_are_not_fused() -> None:
    """The int4 packing stacks in blocks of 64 output channels; other shapes and mixed kinds
    keep their own kernels."""
    torch.manual_seed(0)
    odd = [Int4Linear.from_float(torch.randn(n, 64)) for n in (96, 64)]
    mixed = [Int4Linear.from_float(torch.randn(64, 64)), Int8Linear.from_float(torch.randn(64, 64))]
    assert qlinear.fuse(odd) is None and qlinear.fuse(mixed) is None
    assert qlinear.fuse(odd[:1]) is None


def test_quantized_decoder_matches_transformers_forward(gguf_files: dict) -> None:
    """The fused decoder's greedy tokens equal transformers' own forward on the same
    quantized modules (one step at a time, no cache)."""
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest

    model = gguf_model_v2(gguf_files["Q4_1"])
    engine = Engine(model, GenerationConfig(max_new_tokens=8), batch_size=4)
    assert engine.fast is not None  # the fused decoder runs it
    assert isinstance(engine.fast.gate_up[0], Int4Linear)  # gate/up in one kernel call
    for text in TEXTS[:3]:
        (result,) = engine.run([GenerationRequest(text)])
        ids = model.encode(text)
        want = []
        with torch.no_grad():
            for _ in range(len(result.token_ids)):
                nxt = int(model.model(torch.tensor([ids])).logits[0, -1].float().argmax())
                want.append(nxt)
                ids.append(nxt)
        assert list(result.token_ids) == want


def test_qlora_trains_on_a_quantized_base_and_round_trips(gguf_files: dict, tmp_path: Path) -> None:
    from thinc.api import Adam

    from ..training.builders import adapter_block, cat_examples, textcat_config

    cfg = textcat_config(Path("unused"), adapter=adapter_block())
    cfg["model"] = {"@llama_models": "spacy-llama.GGUF.v2", "path": str(gguf_files["Q4_0"])}
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=cfg)
    examples = cat_examples(nlp)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    losses = []
    for _ in range(5):
        got: dict = {}
        nlp.update(examples, sgd=optimizer, losses=got)
        losses.append(got["llama"])
    assert losses[-1] < losses[0] * 0.8
    trained = [d.cats for d in nlp.pipe([e.text for e in examples])]
    nlp.to_disk(tmp_path / "out")
    saved = sorted(p.name for p in (tmp_path / "out" / "llama").rglob("*") if p.is_file())
    assert "adapter_model.safetensors" in saved
    assert not any(name.endswith((".gguf", ".bin")) for name in saved)
    again = spacy.load(tmp_path / "out")
    assert [d.cats for d in again.pipe([e.text for e in examples])] == trained


# -- memory: a subprocess measures the peak ----------------------------------------------
PEAK_SCRIPT = r"""
import json, resource, sys
import transformers, gguf  # what the load imports: the runtime, not the model
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
from transformers.integrations import ggml
from spacy_llama.models.gguf_stream import gguf_model_v2
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = gguf_model_v2(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def rss_kib():
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS")).split()[1])
loaded = rss_kib()
from spacy_llama.generation.decoder import fused_decoder
fused_decoder(model.model, prepack=False)  # q/k/v and gate/up stacked: copies, then frees
weights = model.model.get_memory_footprint() // 1024
print(json.dumps({"before_kib": before, "peak_kib": peak, "loaded_kib": loaded,
                  "fused_kib": rss_kib(), "weights_kib": weights}))
"""


def test_streaming_load_peak_stays_near_the_kept_weights(tiny_hf: Path, tmp_path: Path) -> None:
    """A model whose float32 weights are ~200 MB, as Q4_0 (~30 MB): loading it raises the
    peak RSS by far less than its float32 size (GGUF.v1 and transformers' de-quantiser hold
    the float model, twice over while converting)."""
    from ..fixtures.tiny import make_tiny_hf

    big = make_tiny_hf(
        tmp_path / "hf",
        config={
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
        },
    )
    config = json.loads((big / "config.json").read_text())
    float_bytes = (big / "model.safetensors").stat().st_size
    assert config["hidden_size"] == 1024 and float_bytes > 150e6
    gguf_file = make_tiny_gguf(tmp_path / "big.gguf", big, "Q4_0")
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(gguf_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    grown = (peak["peak_kib"] - peak["before_kib"]) * 1024
    # the kept weights (~1/6 of float32) and one tensor in flight: well under half the
    # float32 model
    assert grown < float_bytes * 0.4, (grown, float_bytes)
    # the fused decoder stacks most of the kept weights anew and frees the old tensors:
    # the freed heap goes back to the OS, the RSS does not grow by a copy of them
    fused_growth = peak["fused_kib"] - peak["loaded_kib"]
    assert fused_growth < peak["weights_kib"] * 0.25, peak


def test_meta_v2_quantizes_each_merged_tensor(tiny_hf: Path, tmp_path: Path) -> None:
    """Meta's model-parallel shards, merged tensor by tensor straight into int8/int4."""
    from spacy_llama.models.meta import meta_model_v2

    from ..fixtures.tiny_meta import meta_from_hf

    folder = meta_from_hf(tiny_hf, tmp_path / "meta", mp=2)
    ref = logits(hf_model_v1(tiny_hf, device="cpu", dtype="float32"))
    plain = meta_model_v2(folder, tokenizer_path=tiny_hf)
    assert torch.allclose(logits(plain), ref, atol=1e-4)
    for mode, kind, bound in (("int8", Int8Linear, 0.05), ("int4", Int4Linear, 0.5)):
        model = meta_model_v2(folder, tokenizer_path=tiny_hf, quantize=mode)
        assert isinstance(model.model.model.layers[1].self_attn.k_proj, kind)
        got = logits(model)
        assert (got - ref).norm().item() < bound * ref.norm().item()
    with pytest.raises(ModelLoadError, match="E903"):
        meta_model_v2(folder, tokenizer_path=tiny_hf, quantize="auto")


def test_the_same_gguf_under_another_name_reuses_its_conversion(
    gguf_files: dict, tmp_path: Path
) -> None:
    """GGUF.v1's cache follows the file's contents, not its name (issue 26, item 5)."""
    import shutil

    from spacy_llama.models.gguf import converted_folder

    copy = tmp_path / "renamed" / "other-name.gguf"
    copy.parent.mkdir()
    shutil.copy(gguf_files["Q8_0"], copy)
    cache = tmp_path / "cache"
    gguf_model_v1(gguf_files["Q8_0"], device="cpu", dtype="float32", cache_dir=cache)
    assert converted_folder(copy, cache) == converted_folder(gguf_files["Q8_0"], cache)
    assert len(list((cache / "gguf").iterdir())) == 1
    gguf_model_v1(copy, device="cpu", dtype="float32", cache_dir=cache)
    assert len(list((cache / "gguf").iterdir())) == 1


def test_listener_features_run_on_a_quantized_model(gguf_files: dict) -> None:
    """spacy-transformers' listeners get the hidden states of the quantized layers: the
    last layer's features equal transformers' own forward on the same modules."""
    from ..features.builders import TEXTS as FEATURE_TEXTS
    from ..features.builders import examples, listener_nlp

    nlp = listener_nlp(
        Path("unused"),
        {
            "components.transformer.model.model": {
                "@llama_models": "spacy-llama.GGUF.v2",
                "path": str(gguf_files["Q4_0"]),
            }
        },
    )
    nlp.initialize(lambda: examples(nlp))
    doc = nlp(FEATURE_TEXTS[1])
    data = doc._.trf_data
    hidden = np.asarray(data.tensors[0])  # (spans, pieces, width): the first window's
    model = gguf_model_v2(gguf_files["Q4_0"])
    ids = [int(i) for i in data.wordpieces.input_ids[0][: data.wordpieces.lengths[0]]]
    assert hidden.shape[-1] == model.model.config.hidden_size
    with torch.no_grad():
        out = model.model(torch.tensor([ids]), output_hidden_states=True)
    want = out.hidden_states[-1][0].numpy()
    assert np.allclose(hidden[0, : len(ids)], want, atol=1e-3)


@pytest.mark.parametrize("dense", [False, True], ids=["kernel", "dense-prompts"])
def test_scoring_and_constrained_decoding_on_quantized_layers(
    gguf_files: dict, dense: bool, monkeypatch
) -> None:
    """Candidate scores from the fused decoder equal a brute-force sum of transformers'
    log-probabilities on the same quantized modules; a `choices` constraint holds."""
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest, ScoreRequest

    monkeypatch.setattr(qlinear, "DENSE", dense)
    model = gguf_model_v2(gguf_files["Q4_0"])
    engine = Engine(model, GenerationConfig(max_new_tokens=4), batch_size=4)
    prompt, candidates = "The quick brown fox", [" jumps", " sleeps over", " x"]
    (scores,) = engine.run_all([ScoreRequest(prompt, candidates)])
    base = model.encode(prompt)
    # every row on the kernel: the same arithmetic, up to the order of sums; with the
    # prompt on the dense GEMM (bf16 weights where the CPU has it) and the candidates on
    # the kernel, up to the bf16 rounding of the weights (2^-9) as well
    tol = 5e-3 if dense and qlinear.dense_dtype() == torch.bfloat16 else 1e-3
    for cand, got in zip(candidates, scores.sums):
        ids = model.encode(prompt + cand)
        assert ids[: len(base)] == base
        with torch.no_grad(), qlinear.dense_rows("kernel"):
            lp = torch.log_softmax(model.model(torch.tensor([ids])).logits[0].float(), -1)
        want = sum(float(lp[i - 1, ids[i]]) for i in range(len(base), len(ids)))
        assert abs(got - want) < tol * max(1.0, abs(want))
    choose = Engine(model, GenerationConfig(max_new_tokens=8, choices=["London", "Paris"]))
    out = choose.run([GenerationRequest(t) for t in TEXTS])
    assert all(r.text in ("London", "Paris") for r in out)


def test_llama31_rope_factors_divide_the_rotary_frequencies(tiny_hf: Path, tmp_path: Path) -> None:
    """A GGUF's rope_freqs.weight (Llama 3.1+) divides the rotary frequencies, as llama.cpp
    does; without it the frequencies are the config's."""
    import gguf

    plain = make_tiny_gguf(tmp_path / "plain.gguf", tiny_hf, "Q8_0")
    reader = gguf.GGUFReader(str(plain))
    writer = gguf.GGUFWriter(str(tmp_path / "scaled.gguf"), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    head_dim = 16  # the tiny model: hidden 64 / 4 heads
    factors = np.linspace(1.0, 8.0, head_dim // 2).astype(np.float32)
    writer.add_tensor("rope_freqs.weight", factors)
    for t in reader.tensors:
        data = np.array(t.data)
        writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    base = gguf_model_v2(plain).model.model.rotary_emb.inv_freq
    scaled = gguf_model_v2(tmp_path / "scaled.gguf").model.model.rotary_emb.inv_freq
    assert torch.allclose(scaled, base / torch.from_numpy(factors))
