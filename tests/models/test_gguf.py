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


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()  # a new file: the first model still memory-maps the old one
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda f: _truncate(f / "model.safetensors"), "model.safetensors has"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda f: (f / "spacy_llama_conversion.json").unlink(), "no completion marker"),
        (lambda f: (f / "spacy_llama_conversion.json").write_text("{"), "unreadable"),
    ],
)
def test_damaged_conversion_cache_is_rebuilt(
    tiny_hf: Path, tiny_gguf: Path, tmp_path: Path, damage, reason: str
) -> None:
    """A truncated or missing file in the cache used to be loaded as it was (an error, or
    a tokenizer rebuilt from whatever files were left); now it is converted again."""
    from spacy_llama.models.gguf import cache_problem, converted_folder
    from spacy_llama.models.loading import clear_loaded_models

    first = gguf_model_v1(tiny_gguf, device="cpu", dtype="float32", cache_dir=tmp_path)
    folder = converted_folder(tiny_gguf, tmp_path)
    assert cache_problem(folder) is None
    damage(folder)
    assert reason in str(cache_problem(folder))
    clear_loaded_models()  # a new process, as far as the loader knows
    with pytest.warns(UserWarning, match=r"\[W120\].*incomplete or damaged.*" + reason):
        again = gguf_model_v1(tiny_gguf, device="cpu", dtype="float32", cache_dir=tmp_path)
    assert cache_problem(folder) is None
    ids = first.encode(TEXTS[1])
    assert again.encode(TEXTS[1]) == ids
    with torch.no_grad():
        batch = torch.tensor([ids])
        assert torch.equal(again.model(batch).logits, first.model(batch).logits)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no leftovers
