"""Saved adapters are loaded strictly (issue 21, item 1), and the base model they belong to
is the weights and tokenizer, not the file format it was read from (issue 26, item 5).

A damaged adapter (emptied, truncated, keys renamed or missing, an extra key, a wrong
shape or dtype, NaN values) used to load silently (predictions of the untrained base or
NaN cats) or fail with a raw RuntimeError/SafetensorError; each is now a coded error naming
the folder and the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import spacy
import torch
from safetensors.torch import load_file, save_file
from thinc.api import SGD

from spacy_llama.errors import TrainingError
from spacy_llama.models.convert import convert

from ..fixtures.tiny_gguf import make_tiny_gguf
from .builders import TEXTS, adapter_block, cat_examples, textcat_config, textcat_nlp

Tensors = Dict[str, torch.Tensor]


def _train(nlp: Any, steps: int = 3) -> Any:
    torch.manual_seed(0)
    opt = SGD(0.1, L2=0.0, grad_clip=0.0)
    for _ in range(steps):
        nlp.update(cat_examples(nlp), sgd=opt)
    return nlp


@pytest.fixture(scope="module")
def saved(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained") / "p"
    _train(textcat_nlp(tiny_hf, adapter=adapter_block())).to_disk(folder)
    return folder


@pytest.fixture
def pipeline(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved pipeline, free to damage."""
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "p"))


def weights_file(pipeline: Path) -> Path:
    return pipeline / "llama" / "adapter" / "adapter_model.safetensors"


def rewrite(pipeline: Path, edit: Callable[[Tensors], Tensors]) -> None:
    file = weights_file(pipeline)
    save_file(edit(dict(load_file(str(file)))), str(file))


def renamed(t: Tensors) -> Tensors:
    return {k.replace("lora_A", "lora_X"): v for k, v in t.items()}


def half(t: Tensors) -> Tensors:
    return dict(sorted(t.items())[: len(t) // 2])


def extra(t: Tensors) -> Tensors:
    return {**t, "base_model.model.stray.weight": torch.zeros(2)}


def nan(t: Tensors) -> Tensors:
    return {k: torch.full_like(v, float("nan")) for k, v in t.items()}


def wrong_shape(t: Tensors) -> Tensors:
    return {k: torch.cat([v, v]) if "lora_A" in k else v for k, v in t.items()}


def wrong_dtype(t: Tensors) -> Tensors:
    return {k: v.to(torch.int32) for k, v in t.items()}


def no_tensors(t: Tensors) -> Tensors:
    return {}


@pytest.mark.parametrize(
    "edit, code",
    [
        (renamed, "E605"),
        (half, "E605"),
        (extra, "E605"),
        (no_tensors, "E605"),
        (nan, "E607"),
        (wrong_shape, "E606"),
        (wrong_dtype, "E606"),
    ],
)
def test_damaged_adapter_weights_are_refused(pipeline: Path, edit: Any, code: str) -> None:
    rewrite(pipeline, edit)
    with pytest.raises(TrainingError) as e:
        spacy.load(pipeline)
    msg = str(e.value)
    assert f"[{code}]" in msg
    assert str(pipeline / "llama" / "adapter") in msg and "adapter_model.safetensors" in msg


@pytest.mark.parametrize("size", ["empty", "truncated"])
def test_unreadable_adapter_file_is_a_coded_error(pipeline: Path, size: str) -> None:
    file = weights_file(pipeline)
    data = file.read_bytes()
    file.write_bytes(b"" if size == "empty" else data[: len(data) // 2])
    with pytest.raises(TrainingError) as e:
        spacy.load(pipeline)
    msg = str(e.value)
    assert "[E604]" in msg and "adapter_model.safetensors" in msg
    assert str(pipeline / "llama" / "adapter") in msg


def test_unreadable_adapter_config_is_a_coded_error(pipeline: Path) -> None:
    (pipeline / "llama" / "adapter" / "adapter_config.json").write_text("{not json")
    with pytest.raises(TrainingError) as e:
        spacy.load(pipeline)
    assert "[E604]" in str(e.value) and "adapter_config.json" in str(e.value)


def test_intact_adapter_still_loads(saved: Path, tiny_hf: Path) -> None:
    loaded = spacy.load(saved)
    base = textcat_nlp(tiny_hf)
    assert [loaded(t).cats for t in TEXTS] != [base(t).cats for t in TEXTS]


def test_adapter_trained_on_a_gguf_loads_on_its_converted_folder(
    tiny_hf: Path, tmp_path: Path
) -> None:
    gguf_file = make_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf)
    cfg = textcat_config(tiny_hf, adapter=adapter_block())
    cfg["model"] = {
        "@llama_models": "spacy-llama.GGUF.v1",
        "path": str(gguf_file),
        "device": "cpu",
        "dtype": "float32",
        "cache_dir": str(tmp_path / "cache"),
    }
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=cfg)
    _train(nlp)
    want = [nlp(t).cats for t in TEXTS]
    nlp.to_disk(tmp_path / "best")
    meta = json.loads((tmp_path / "best/llama/adapter/adapter_config.json").read_text())
    assert meta["base_identity"]

    converted = tmp_path / "converted"
    convert(gguf_file, converted)
    hf_model = {
        "@llama_models": "spacy-llama.HF.v1",
        "path": str(converted),
        "device": "cpu",
        "dtype": "float32",
    }
    loaded = spacy.load(tmp_path / "best", config={"components": {"llama": {"model": hf_model}}})
    assert loaded.get_pipe("llama").model.source != nlp.get_pipe("llama").model.source
    for text, cats in zip(TEXTS, want):
        assert loaded(text).cats == pytest.approx(cats, abs=1e-5)


def test_adapter_on_another_base_is_still_refused(saved: Path, tmp_path: Path) -> None:
    from ..fixtures.tiny import make_tiny_hf

    other = make_tiny_hf(tmp_path / "other", seed=1)
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(other), "device": "cpu"}
    with pytest.raises(TrainingError, match="E509"):
        spacy.load(saved, config={"components": {"llama": {"model": model}}})
