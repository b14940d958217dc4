"""``python -m spacy_llama convert``: Meta folders and GGUF files -> Hugging Face folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from spacy_llama.cli import main
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.meta import meta_model_v1

from ..fixtures.tiny_gguf import make_tiny_gguf
from ..fixtures.tiny_meta import TinyMeta, make_meta_checkpoint

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory) -> TinyMeta:
    return make_meta_checkpoint(tmp_path_factory.mktemp("l3"), style="llama3", mp=2, n_kv_heads=2)


@pytest.fixture(scope="module")
def llama2(tmp_path_factory: pytest.TempPathFactory) -> TinyMeta:
    return make_meta_checkpoint(tmp_path_factory.mktemp("l2"), style="llama2", mp=4, n_kv_heads=2)


def _weights_dtype(folder: Path) -> torch.dtype:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("model.embed_tokens.weight").dtype


def _logits(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


@pytest.mark.parametrize("which", ["llama2", "llama3"])
def test_convert_meta(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tiny: TinyMeta = request.getfixturevalue(which)
    dest = tmp_path / "hf"
    assert main(["convert", str(tiny.folder), str(dest)]) == 0
    assert (dest / "config.json").exists() and (dest / "tokenizer.json").exists()
    assert _weights_dtype(dest) == torch.float32  # auto keeps the checkpoint's dtype
    converted = hf_model_v1(dest, device="cpu", dtype="float32")
    direct = meta_model_v1(tiny.folder, device="cpu", dtype="float32")
    ids = direct.encode(TEXT)
    assert converted.encode(TEXT) == ids
    assert (_logits(converted.model, ids) - _logits(tiny.model, ids)).abs().max() < 1e-4
    assert sorted(converted.stop_token_ids) == sorted(direct.stop_token_ids)
    assert converted.context_length == direct.context_length
    assert converted.has_chat_template == (which == "llama3")


def test_convert_meta_dtype(llama2: TinyMeta, tmp_path: Path) -> None:
    dest = tmp_path / "bf16"
    assert (
        main(
            [
                "convert",
                str(llama2.folder),
                str(dest),
                "--dtype",
                "bfloat16",
                "--context-length",
                "512",
            ]
        )
        == 0
    )
    assert _weights_dtype(dest) == torch.bfloat16
    assert json.loads((dest / "config.json").read_text())["max_position_embeddings"] == 512


def test_convert_gguf(tiny_hf: Path, tmp_path: Path) -> None:
    gguf = make_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf)
    dest = tmp_path / "from-gguf"
    assert main(["convert", str(gguf), str(dest)]) == 0
    converted = hf_model_v1(dest, device="cpu", dtype="float32")
    original = hf_model_v1(tiny_hf, device="cpu", dtype="float32")
    ids = original.encode(TEXT)
    assert converted.encode(TEXT) == ids
    assert (_logits(converted.model, ids) - _logits(original.model, ids)).abs().max() < 1e-4


def test_convert_refuses_existing_dest(llama2: TinyMeta, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert main(["convert", str(llama2.folder), str(dest)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (dest / "keep.txt").read_text() == "mine"
    assert main(["convert", str(llama2.folder), str(dest), "--force"]) == 0
    assert not (dest / "keep.txt").exists() and (dest / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".busy.")]  # no leftovers


def test_convert_errors(tmp_path: Path, tiny_hf: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", str(empty), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no *.pth" in err and str(empty) in err
    assert not (tmp_path / "out").exists()
    gguf = make_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf)
    assert main(["convert", str(gguf), str(tmp_path / "out"), "--dtype", "bfloat16"]) == 1
    assert "Meta checkpoints only" in capsys.readouterr().err


def test_python_m_entry_point(llama2: TinyMeta, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spacy_llama", "convert", str(llama2.folder), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "spacy-llama.HF.v1" in done.stdout
    assert (tmp_path / "o" / "model.safetensors").exists()


def test_convert_dest_under_a_file(llama2: TinyMeta, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """DEST=somefile/out raised FileExistsError from mkdir, after the conversion's work."""
    somefile = tmp_path / "somefile"
    somefile.write_text("keep me")
    for dest in (somefile / "out", somefile / "deeper" / "out"):
        assert main(["convert", str(llama2.folder), str(dest)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("[spacy-llama] convert: error: [E162]")
        assert repr(str(somefile)) in err and "is a file, not a folder" in err
    assert somefile.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]  # nothing left behind
