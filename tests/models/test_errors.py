"""Bad input gets a clear error that names the thing and the fix."""

from __future__ import annotations

import shutil

import pytest
import spacy
from confection import ConfigValidationError

from spacy_llama.errors import ModelLoadError, TemplateError
from spacy_llama.models.gguf import gguf_model_v1
from spacy_llama.models.hf import hf_model_v1

from ..fixtures.helpers import tiny_llama_config


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as e:
        hf_model_v1(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="no config.json") as e:
        hf_model_v1(tmp_path)
    assert "notes.txt" in str(e.value)


def test_folder_without_weights(tmp_path, tiny_hf):
    shutil.copy(tiny_hf / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="no weights"):
        hf_model_v1(tmp_path)


def test_gguf_file_given_to_hf_loader(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ModelLoadError, match="spacy-llama.GGUF.v1"):
        hf_model_v1(f)


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="not a GGUF file") as e:
        gguf_model_v1(bad, cache_dir=tmp_path / "cache")
    assert str(bad) in str(e.value)


def test_truncated_gguf(tmp_path):
    bad = tmp_path / "trunc.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 10)
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as e:
        gguf_model_v1(bad, cache_dir=tmp_path / "cache")
    assert str(bad) in str(e.value)


def test_missing_gguf(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        gguf_model_v1(tmp_path / "x.gguf")


def test_template_syntax_error_names_line(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, template="line one\n{% for x in %}\n")
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_template_unknown_variable_fails_at_build(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, template="ok\n{{ text }}\n{{ nonsense.attr }}")
    with pytest.raises(TemplateError, match="line 3") as e:
        spacy.blank("en").add_pipe("llama", config=cfg)
    assert "nonsense" in str(e.value)


def test_template_file_missing(tiny_hf, tmp_path):
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"]["template_path"] = str(tmp_path / "missing.jinja")
    with pytest.raises(TemplateError, match="missing.jinja"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_template_from_file(tiny_hf, tmp_path):
    path = tmp_path / "p.jinja"
    path.write_text("File: {{ text }}")
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"]["template_path"] = str(path)
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("llama", config=cfg)
    [req] = pipe.task.requests([nlp.make_doc("abc")])
    assert req.prompt == "File: abc"


def test_sandbox_blocks_unsafe_template(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, template="{{ text.__class__.__mro__ }}")
    with pytest.raises(TemplateError, match="unsafe|SecurityError"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_unknown_generation_key_is_config_error(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, generation={"max_new_token": 3})
    with pytest.raises(ConfigValidationError, match="max_new_token"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_wrong_type_is_config_error(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, generation={"temperature": "hot"})
    with pytest.raises(ConfigValidationError, match="temperature"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_unknown_model_key_is_config_error(tiny_hf):
    cfg = tiny_llama_config(tiny_hf)
    cfg["model"]["pathh"] = "x"
    with pytest.raises(ConfigValidationError, match="pathh"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_bad_dtype_is_config_error(tiny_hf):
    cfg = tiny_llama_config(tiny_hf)
    cfg["model"]["dtype"] = "float8"
    with pytest.raises(ConfigValidationError, match="dtype"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_chat_without_chat_template(tmp_path):
    from ..fixtures.tiny import make_tiny_hf, without_chat_template

    folder = without_chat_template(make_tiny_hf(tmp_path / "m"))
    cfg = tiny_llama_config(folder, chat=True)
    with pytest.raises(ValueError, match="no chat template"):
        spacy.blank("en").add_pipe("llama", config=cfg)
