"""spacy-llama.Meta.v1: Meta checkpoint folders load into the same model as the HF folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

from spacy_llama.errors import ModelLoadError
from spacy_llama.models.meta import MetaParams, meta_model_v1
from spacy_llama.models.meta.tokenizer_formats import detect_format, llama3_special_tokens

from ..fixtures.tiny_meta import TinyMeta, make_meta_checkpoint, tiktoken_encoding

TEXT = "The quick brown fox jumps over the lazy dog. London is a big city."
TEXTS = [
    "Hello world",
    "  two  spaces,\ttab\nnewline  ",
    "Numbers 1234567 and 3.14!",
    "naïve café – ünïcödé 日本語 🙂",
    "Apple is looking at buying a U.K. startup for $1 billion.",
]

# (style, model-parallel shards, n_kv_heads): MP 1/2/4, with and without GQA, and MP 4 over
# 2 kv heads, where Meta replicates each kv head over two shards.
CASES = [
    ("llama1", 1, None),
    ("llama2", 2, 2),
    ("llama2", 4, 2),
    ("codellama", 2, None),
    ("llama3", 1, 2),
    ("llama3", 2, None),
    ("llama31", 4, 2),
]
CONTEXT = {"llama1": 2048, "llama2": 4096, "codellama": 16384, "llama3": 8192, "llama31": 131072}

_BUILT: Dict[Tuple[str, int, object], TinyMeta] = {}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):
    def _build(style: str, mp: int, kv: object) -> TinyMeta:
        key = (style, mp, kv)
        if key not in _BUILT:
            folder = tmp_path_factory.mktemp(f"{style}-mp{mp}-kv{kv}")
            _BUILT[key] = make_meta_checkpoint(folder, style=style, mp=mp, n_kv_heads=kv)  # type: ignore[arg-type]
        return _BUILT[key]

    return _build


def _load(folder: Path, **kwargs: object):
    return meta_model_v1(folder, device="cpu", dtype="float32", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("style,mp,kv", CASES)
def test_logits_match_original(build, style: str, mp: int, kv: object) -> None:
    tiny = build(style, mp, kv)
    loaded = _load(tiny.folder)
    ids = torch.tensor([loaded.encode(TEXT)])
    with torch.no_grad():
        expected = tiny.model(ids).logits
        got = loaded.model(ids).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert loaded.context_length == CONTEXT[style]
    config = loaded.model.config
    assert config.num_key_value_heads == (kv or 4)
    if style == "llama31":
        assert config.rope_scaling["rope_type"] == "llama3"
        assert config.rope_scaling["factor"] == 8.0


@pytest.mark.parametrize("style", ["llama2", "llama3"])
def test_completion_equals_hf_folder(build, style: str) -> None:
    import spacy

    tiny = build(style, 2, 2)

    def complete(model_cfg: Dict[str, str]) -> str:
        nlp = spacy.blank("en")
        nlp.add_pipe(
            "llama",
            config={
                "model": {**model_cfg, "device": "cpu", "dtype": "float32"},
                "task": {
                    "@llama_tasks": "spacy-llama.Completion.v1",
                    "template": "{{ text }}",
                    "chat": False,
                },
                "generation": {"max_new_tokens": 8},
            },
        )
        return str(nlp("The quick brown fox")._.llama_completion)

    meta = complete({"@llama_models": "spacy-llama.Meta.v1", "path": str(tiny.folder)})
    hf = complete({"@llama_models": "spacy-llama.HF.v1", "path": str(tiny.hf_folder)})
    assert meta == hf
    assert meta  # the random model does produce something


def test_sentencepiece_ids_equal_sentencepiece(build) -> None:
    import sentencepiece as spm

    tiny = build("llama2", 2, 2)
    sp = spm.SentencePieceProcessor(model_file=str(tiny.folder / "tokenizer.model"))
    loaded = _load(tiny.folder)
    for text in TEXTS:
        assert loaded.encode(text) == [1, *sp.encode(text)]
        assert loaded.decode(loaded.encode(text)) == sp.decode(sp.encode(text))
    assert loaded.stop_token_ids == [2]
    assert loaded.pad_token_id == 2
    assert loaded.tokenizer.bos_token_id == 1


def test_tiktoken_ids_equal_tiktoken(build) -> None:
    tiny = build("llama3", 1, 2)
    enc = tiktoken_encoding(tiny.folder / "tokenizer.model")
    loaded = _load(tiny.folder)
    base = enc.n_vocab - 256
    for text in [*TEXTS, "a<|eot_id|>b <|start_header_id|>user<|end_header_id|>\n\nhi"]:
        want = enc.encode(text, allowed_special="all")
        assert loaded.encode(text, add_special_tokens=False) == want
        assert loaded.encode(text) == [base, *want]  # <|begin_of_text|> first
    for text in TEXTS:
        assert loaded.decode(loaded.encode(text)) == text == enc.decode(enc.encode(text))
    tok = loaded.tokenizer
    assert tok.convert_tokens_to_ids("<|begin_of_text|>") == base
    assert tok.convert_tokens_to_ids("<|end_of_text|>") == base + 1
    assert tok.convert_tokens_to_ids("<|start_header_id|>") == base + 6
    assert tok.convert_tokens_to_ids("<|eot_id|>") == base + 9
    assert tok.convert_tokens_to_ids("<|reserved_special_token_250|>") == base + 255
    assert sorted(loaded.stop_token_ids) == [base + 1, base + 9]
    assert len(tok) == base + 256


def test_llama3_chat_template(build) -> None:
    loaded = _load(build("llama3", 1, 2).folder)
    prompt = loaded.apply_chat_template("Hi there", "Be brief.")
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama31_specials_and_stops(build) -> None:
    loaded = _load(build("llama31", 4, 2).folder)
    tok = loaded.tokenizer
    base = len(tok) - 256
    assert tok.convert_tokens_to_ids("<|eom_id|>") == base + 8
    assert tok.convert_tokens_to_ids("<|python_tag|>") == base + 10
    assert tok.convert_tokens_to_ids("<|reserved_special_token_246|>") == base + 255
    assert sorted(loaded.stop_token_ids) == [base + 1, base + 8, base + 9]
    names = llama3_special_tokens(variant="3.1")
    assert len(names) == len(set(names)) == 256


def test_detect_format(build) -> None:
    assert detect_format(build("llama3", 1, 2).folder / "tokenizer.model") == "tiktoken"
    assert detect_format(build("llama2", 2, 2).folder / "tokenizer.model") == "sentencepiece"


def test_ffn_size_formula() -> None:
    def params(dim: int, mult: object, multiple_of: int) -> MetaParams:
        return MetaParams(dim, 1, 32, 8, -1, multiple_of, mult, 1e-5, 1e4, False, None)  # type: ignore[arg-type]

    assert params(4096, None, 256).ffn_dim == 11008  # Llama 2 7B
    assert params(8192, 1.3, 4096).ffn_dim == 28672  # Llama 2 70B
    assert params(4096, 1.3, 1024).ffn_dim == 14336  # Llama 3 8B
    assert params(2048, 1.5, 256).ffn_dim == 8192  # Llama 3.2 1B


def test_dtype_context_override_and_registry(build) -> None:
    import spacy

    from spacy_llama.registry import llama_models

    tiny = build("llama2", 2, 2)
    loaded = meta_model_v1(tiny.folder, device="cpu", dtype="bfloat16", context_length=1024)
    assert loaded.dtype == torch.bfloat16
    assert loaded.context_length == 1024
    assert llama_models.get("spacy-llama.Meta.v1") is meta_model_v1
    assert spacy.registry.llama_models.get("spacy-llama.Meta.v1") is meta_model_v1  # type: ignore[attr-defined]
    names = {p.name for p in loaded.fingerprint_files}
    assert names == {"consolidated.00.pth", "consolidated.01.pth", "params.json", "tokenizer.model"}


def test_tied_output_llama32(build, tmp_path: Path) -> None:
    """Llama 3.2 1B/3B share embedding and output: tie them and use rope factor 32."""
    folder = _copy(build("llama31", 1, 2).folder, tmp_path)
    shard = torch.load(folder / "consolidated.00.pth", weights_only=True)
    del shard["output.weight"]
    torch.save(shard, folder / "consolidated.00.pth")
    loaded = _load(folder)
    model = loaded.model
    assert model.config.tie_word_embeddings
    assert model.config.rope_scaling["factor"] == 32.0
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.model.embed_tokens.weight, shard["tok_embeddings.weight"])


# -- errors ----------------------------------------------------------------------------------


def _copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(src, dest)
    return dest


def test_error_no_pth(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text("{}")
    with pytest.raises(ModelLoadError) as e:
        _load(tmp_path)
    assert str(tmp_path) in str(e.value) and "params.json" in str(e.value)
    assert "consolidated.00.pth" in str(e.value)


def test_error_params_missing(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    (folder / "params.json").unlink()
    with pytest.raises(ModelLoadError, match="no params.json"):
        _load(folder)


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON"),
        ('{"n_layers": 2, "n_heads": 4}', "'dim'"),
        ('{"dim": "64", "n_layers": 2, "n_heads": 4}', "must be an integer"),
    ],
)
def test_error_params_malformed(build, tmp_path: Path, content: str, message: str) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    (folder / "params.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message) as e:
        _load(folder)
    assert "params.json" in str(e.value)


def test_error_params_wrong_ffn(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    params = json.loads((folder / "params.json").read_text())
    params["ffn_dim_multiplier"] = 2.0
    (folder / "params.json").write_text(json.dumps(params))
    with pytest.raises(ModelLoadError, match="ffn size") as e:
        _load(folder)
    assert "params.json belongs to another model" in str(e.value)


def test_error_inconsistent_shard_shapes(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    shard = torch.load(folder / "consolidated.01.pth", weights_only=True)
    shard["layers.0.feed_forward.w1.weight"] = shard["layers.0.feed_forward.w1.weight"][:-8].clone()
    torch.save(shard, folder / "consolidated.01.pth")
    with pytest.raises(ModelLoadError, match="Inconsistent shapes") as e:
        _load(folder)
    assert "layers.0.feed_forward.w1.weight" in str(e.value)
    assert "consolidated.01.pth" in str(e.value)


def test_error_missing_shard(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 4, 2).folder, tmp_path)
    (folder / "consolidated.02.pth").unlink()
    with pytest.raises(ModelLoadError, match=r"missing shard\(s\) consolidated.02.pth") as e:
        _load(folder)
    assert str(folder) in str(e.value)


def test_error_tokenizer_vocab_mismatch(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    other = build("llama3", 1, 2).folder / "tokenizer.model"
    with pytest.raises(ModelLoadError, match="embedding") as e:
        _load(folder, tokenizer_path=other)
    assert "tokenizer" in str(e.value) and str(other) in str(e.value)


def test_error_truncated_pth(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    shard = folder / "consolidated.01.pth"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as e:
        _load(folder)
    assert str(shard) in str(e.value)


class Evil:
    def __reduce__(self):  # would run code when unpickled
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [{"x": Evil()}, {"w": torch.zeros(2), "step": 5}])
def test_error_non_tensor_pickle(build, tmp_path: Path, payload: object) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    torch.save(payload, folder / "consolidated.01.pth")
    with pytest.raises(ModelLoadError, match="Refusing") as e:
        _load(folder)
    assert "consolidated.01.pth" in str(e.value)


# -- no torch.distributed --------------------------------------------------------------------


def test_no_process_group(build) -> None:
    """The whole path runs with torch.distributed unavailable and booby-trapped."""
    tiny = build("llama2", 4, 2)
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        import torch.distributed as dist

        def trap(*args, **kwargs):
            raise AssertionError("torch.distributed used")

        for name in ("init_process_group", "new_group", "barrier", "all_reduce",
                     "all_gather", "broadcast", "get_rank", "get_world_size"):
            setattr(dist, name, trap)
        dist.is_available = lambda: False
        from spacy_llama.models.meta import meta_model_v1
        m = meta_model_v1({str(tiny.folder)!r}, device="cpu", dtype="float32")
        out = m.model(torch.tensor([m.encode("hello world")])).logits
        assert out.shape[-1] == len(m.tokenizer)
        assert not dist.is_initialized()
        assert "fairscale" not in sys.modules
        print("OK")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("OK")
    assert not torch.distributed.is_initialized()
    # every module of the loader package (read from where it is imported, so a move is seen)
    import spacy_llama.models.meta as meta_package

    files = sorted(Path(meta_package.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "shards.py", "merge.py", "loader.py"}
    for file in files:
        source = file.read_text()
        assert "torch.distributed" not in source.replace("No torch.distributed", ""), file.name
        assert "import fairscale" not in source, file.name


def test_error_legacy_serialization(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    shard = folder / "consolidated.01.pth"
    torch.save(torch.load(shard, weights_only=True), shard, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="legacy") as e:
        _load(folder)
    assert str(shard) in str(e.value) and "Re-save" in str(e.value)


def test_error_no_tokenizer(build, tmp_path: Path) -> None:
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(ModelLoadError, match="No tokenizer.model") as e:
        _load(folder)
    assert "tokenizer_path" in str(e.value)


def test_shard_pages_released_only_inside_file_mappings(build) -> None:
    """drop_pages acts on the shard files' own mappings and never on anonymous memory."""
    from spacy_llama.models.meta import drop_pages, file_mappings, load_shard, shard_files

    files = shard_files(build("llama2", 2, 2).folder)
    tensors = [load_shard(f) for f in files]
    mapped = file_mappings(files)
    if sys.platform.startswith("linux"):
        # every shard's tensors lie inside the mappings (adjacent files may merge into one)
        for shard in tensors:
            for t in shard.values():
                ptr = t.untyped_storage().data_ptr()
                assert any(lo <= ptr < hi for lo, hi in mapped)
    key = "layers.0.feed_forward.w1.weight"
    before = tensors[0][key].clone()
    drop_pages(tensors[0][key], mapped)  # re-read from the file on the next touch
    assert torch.equal(tensors[0][key], before)
    anonymous = torch.ones(1 << 16)
    drop_pages(anonymous, mapped)  # outside the mappings: left alone (would zero otherwise)
    assert bool((anonymous == 1).all())


@pytest.mark.parametrize("key", ["layers.1.ffn_norm.weight", "norm.weight"])
def test_error_shard_from_another_model(build, tmp_path: Path, key: str) -> None:
    """Shard 01 of another model of the same size has the same keys and shapes; its copies
    of the replicated norms differ. It used to merge silently into a broken model."""
    folder = _copy(build("llama2", 2, 2).folder, tmp_path)
    other = make_meta_checkpoint(tmp_path / "other", style="llama2", mp=2, n_kv_heads=2, seed=1)
    foreign = torch.load(other.folder / "consolidated.01.pth", weights_only=True)
    ours = torch.load(folder / "consolidated.01.pth", weights_only=True)
    assert foreign.keys() == ours.keys()
    assert all(foreign[k].shape == ours[k].shape for k in ours)
    # A random init sets every norm to 1; a trained model's norms are its own.
    foreign[key] = foreign[key] * 1.5
    torch.save(foreign, folder / "consolidated.01.pth")
    with pytest.raises(ModelLoadError, match=r"\[E182\].*do not belong together") as e:
        _load(folder)
    message = str(e.value)
    assert str(folder / "consolidated.00.pth") in message
    assert str(folder / "consolidated.01.pth") in message and repr(key) in message
