"""The model fingerprint (it keys the response cache and the run's config hash) covers
everything that changes a model's answers: weights, config, generation config, tokenizer
files and chat template, our GGUF conversion, Meta's params and shards; and a loaded model
is not reused from the per-process cache once its folder changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from spacy_llama.errors import ModelLoadError
from spacy_llama.models import gguf as gguf_mod
from spacy_llama.models.base import file_digest
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.loading import clear_loaded_models, finish_model, load_hf_folder
from spacy_llama.models.meta import meta_model_v1

from ..fixtures.tiny_gguf import make_tiny_gguf
from ..fixtures.tiny_meta import meta_from_hf


@pytest.fixture
def model_copy(tiny_hf: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model: the session ``tiny_hf`` is shared, never edit it."""
    return Path(shutil.copytree(tiny_hf, tmp_path / "model"))


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf8")


def chat_template_in_tokenizer_config(folder: Path) -> None:
    """The older layout: the chat template inside tokenizer_config.json, edited there."""
    template = (folder / "chat_template.jinja").read_text(encoding="utf8")
    (folder / "chat_template.jinja").unlink()
    edit_json(folder / "tokenizer_config.json", chat_template=template + "{# edited #}")


EDITS: Dict[str, Callable[[Path], None]] = {
    "rope_theta": lambda f: edit_json(f / "config.json", rope_theta=500000.0),
    "max_position_embeddings": lambda f: edit_json(f / "config.json", max_position_embeddings=128),
    "generation_config": lambda f: edit_json(f / "generation_config.json", eos_token_id=[2, 0]),
    "chat_template.jinja": lambda f: (f / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}", encoding="utf8"
    ),
    "tokenizer_config chat_template": chat_template_in_tokenizer_config,
    "special_tokens_map": lambda f: edit_json(f / "special_tokens_map.json", pad_token="<unk>"),
    "added_tokens": lambda f: (f / "added_tokens.json").write_text("{}", encoding="utf8"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_editing_a_model_file_changes_the_fingerprint(model_copy: Path, edit: str) -> None:
    before = hf_model_v1(model_copy, device="cpu", dtype="float32")
    old = before.fingerprint
    EDITS[edit](model_copy)
    clear_loaded_models()  # this test is about the fingerprint (the next about the cache)
    after = hf_model_v1(model_copy, device="cpu", dtype="float32")
    assert after.fingerprint != old


def test_edited_folder_is_loaded_again_not_served_from_the_cache(model_copy: Path) -> None:
    first = hf_model_v1(model_copy, device="cpu", dtype="float32")
    assert hf_model_v1(model_copy, device="cpu", dtype="float32") is first  # unchanged: shared
    edit_json(model_copy / "config.json", rope_theta=500000.0)
    second = hf_model_v1(model_copy, device="cpu", dtype="float32")
    assert second is not first
    assert second.model.config.rope_theta == 500000.0
    assert hf_model_v1(model_copy, device="cpu", dtype="float32") is second


def test_fingerprint_is_of_contents_not_location(tiny_hf: Path, tmp_path: Path) -> None:
    a = Path(shutil.copytree(tiny_hf, tmp_path / "a"))
    b = Path(shutil.copytree(tiny_hf, tmp_path / "elsewhere" / "b"))
    fa = hf_model_v1(a, device="cpu", dtype="float32").fingerprint
    assert hf_model_v1(b, device="cpu", dtype="float32").fingerprint == fa
    (b / "README.md").write_text("notes that change no answer", encoding="utf8")
    assert hf_model_v1(b, device="cpu", dtype="float32").fingerprint == fa


def test_files_edited_after_loading_are_refused(model_copy: Path) -> None:
    """The fingerprint is computed when first needed; if the files changed since the model
    was loaded, it would describe files the loaded model does not hold."""
    model = hf_model_v1(model_copy, device="cpu", dtype="float32")
    edit_json(model_copy / "config.json", rope_theta=500000.0)
    with pytest.raises(ModelLoadError, match=r"\[E100\].*config\.json"):
        _ = model.fingerprint


def test_loaded_tokenizer_and_config_count_beyond_the_files(tiny_hf: Path) -> None:
    """What a loader fixes in memory (GGUF special tokens, Meta's context length) changes
    answers as much as a file does."""
    model = load_hf_folder(tiny_hf, device="cpu", dtype="float32")  # private: edited below

    def fingerprint() -> str:
        return finish_model(
            model.model, model.tokenizer, name="t", source="t", fingerprint_files=[]
        ).fingerprint

    base = fingerprint()
    tokenizer = model.tokenizer
    pad, template = tokenizer.pad_token, tokenizer.chat_template
    tokenizer.pad_token = "<unk>"  # as GGUF's fix_special_tokens sets them
    assert fingerprint() != base
    tokenizer.pad_token = pad
    tokenizer.chat_template = template + "{# changed #}"
    assert fingerprint() != base
    tokenizer.chat_template = template
    model.model.config.rope_theta = 500000.0  # as Meta's loader builds its config
    assert fingerprint() != base
    model.model.config.rope_theta = 10000.0
    assert fingerprint() == base


def test_digest_memo_notices_a_replaced_file_of_equal_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"rope_theta": 1}', encoding="utf8")
    first = file_digest(path)
    stat = os.stat(path)
    replacement = tmp_path / "new.json"
    replacement.write_text('{"rope_theta": 2}', encoding="utf8")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)  # an atomic save: same size, same mtime, new inode
    assert file_digest(path) != first


def test_gguf_fingerprint_covers_our_conversion(
    tiny_hf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = make_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf)
    cache = tmp_path / "cache"
    before = gguf_mod.gguf_model_v1(file, device="cpu", dtype="float32", cache_dir=cache)
    monkeypatch.setattr(gguf_mod, "CONVERSION_VERSION", gguf_mod.CONVERSION_VERSION + 1)
    after = gguf_mod.load_gguf(file, device="cpu", dtype="float32", cache_dir=cache)
    assert after.fingerprint != before.fingerprint


def test_edited_gguf_file_is_loaded_again(tiny_hf: Path, tmp_path: Path) -> None:
    file = make_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf)
    cache = tmp_path / "cache"
    first = gguf_mod.gguf_model_v1(file, device="cpu", dtype="float32", cache_dir=cache)
    fp = first.fingerprint
    edited = Path(shutil.copytree(tiny_hf, tmp_path / "edited"))
    edit_json(edited / "config.json", rope_theta=500000.0)
    make_tiny_gguf(file, edited)  # the same path now holds other metadata
    second = gguf_mod.gguf_model_v1(file, device="cpu", dtype="float32", cache_dir=cache)
    assert second is not first and second.fingerprint != fp


@pytest.fixture
def meta_copy(model_copy: Path, tmp_path: Path) -> Path:
    return meta_from_hf(model_copy, tmp_path / "meta")


def test_meta_context_length_changes_the_fingerprint(meta_copy: Path, model_copy: Path) -> None:
    load = dict(tokenizer_path=model_copy, device="cpu", dtype="float32")
    default = meta_model_v1(meta_copy, **load)  # type: ignore[arg-type]
    longer = meta_model_v1(meta_copy, context_length=1024, **load)  # type: ignore[arg-type]
    assert longer.context_length != default.context_length
    assert longer.fingerprint != default.fingerprint


@pytest.mark.parametrize("edit", ["params", "shard", "tokenizer chat template"])
def test_meta_inputs_change_the_fingerprint(meta_copy: Path, model_copy: Path, edit: str) -> None:
    load = dict(tokenizer_path=model_copy, device="cpu", dtype="float32")
    before = meta_model_v1(meta_copy, **load)  # type: ignore[arg-type]
    old = before.fingerprint
    if edit == "params":
        edit_json(meta_copy / "params.json", rope_theta=500000.0)
    elif edit == "shard":
        import torch

        shard = meta_copy / "consolidated.00.pth"
        tensors = torch.load(shard, weights_only=True)
        # a sharded tensor (a replicated one would now fail the shards-belong-together check)
        key = next(k for k in tensors if k.endswith("attention.wq.weight"))
        tensors[key] = tensors[key] * 2
        torch.save(tensors, shard)
    else:
        (model_copy / "chat_template.jinja").write_text("{{ messages }}", encoding="utf8")
    after = meta_model_v1(meta_copy, **load)  # type: ignore[arg-type]
    assert after is not before
    assert after.fingerprint != old
