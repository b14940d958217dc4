"""The tiny GGUF fixture, and the three loaders (HF folder, GGUF, Meta) agreeing on the same
weights."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch

from spacy_llama.models.gguf import gguf_model_v1
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.meta import meta_model_v1

from ..fixtures.tiny_gguf import make_tiny_gguf
from ..fixtures.tiny_meta import meta_from_hf

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Marie Curie won the Nobel Prize in Physics in 1903!",
    "  spaces\tand\nnewlines ünïcode 🙂",
]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_hf)


def test_gguf_metadata(tiny_gguf: Path, tiny_hf: Path) -> None:
    reader = gguf.GGUFReader(str(tiny_gguf))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert {"blk.1.attn_q.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"} <= names
    assert len(names) == 3 + 2 * 9
    model = reader.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "gpt2"


def test_three_loaders_agree(tiny_hf: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    hf = hf_model_v1(tiny_hf, device="cpu", dtype="float32")
    from_gguf = gguf_model_v1(tiny_gguf, device="cpu", dtype="float32", cache_dir=tmp_path)
    meta_folder = meta_from_hf(tiny_hf, tmp_path / "meta", mp=2)
    meta = meta_model_v1(meta_folder, tokenizer_path=tiny_hf, device="cpu", dtype="float32")
    for text in TEXTS:
        ids = hf.encode(text)
        assert from_gguf.encode(text) == ids
        assert meta.encode(text) == ids
        batch = torch.tensor([ids])
        with torch.no_grad():
            want = hf.model(batch).logits
            for other in (from_gguf, meta):
                assert (other.model(batch).logits - want).abs().max().item() < 1e-4
    assert from_gguf.decode(hf.encode(TEXTS[0])) == TEXTS[0]
    assert hf.stop_token_ids[0] == from_gguf.stop_token_ids[0] == meta.stop_token_ids[0] == 2
