"""The run's config hash (OUTPUT.run.json) and the response cache see every edit that
changes the answers: the model's files, and the contents of every file the config names
(templates, few-shot examples); a resume after such an edit is refused instead of mixing
old and new records, and a rerun does not serve stale answers from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest
import srsly

from spacy_llama.batch import identity
from spacy_llama.batch.identity import config_hash
from spacy_llama.batch.loading import load_pipeline
from spacy_llama.cli import main
from spacy_llama.errors import PipelineError

from ..fixtures.corpus_files import corpus, run, write_jsonl
from ..fixtures.helpers import write_config

TEXTCAT_CONFIG = """
[paths]
shots = {shots}

[nlp]
lang = "en"
pipeline = ["llama"]
batch_size = 8

[components]

[components.llama]
factory = "llama"
batch_size = 8

[components.llama.model]
@llama_models = "spacy-llama.HF.v1"
path = {model}
device = "cpu"
dtype = "float32"

[components.llama.task]
@llama_tasks = "spacy-llama.TextCat.v1"
labels = ["business", "sport"]
chat = false

[components.llama.task.examples]
@llama_readers = "spacy-llama.FewShotReader.v1"
path = ${{paths.shots}}

[components.llama.generation]
max_new_tokens = 1
"""


@pytest.fixture
def model_copy(tiny_hf: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model: the session ``tiny_hf`` is shared, never edit it."""
    return Path(shutil.copytree(tiny_hf, tmp_path / "model"))


def template_config(folder: Path, model: Path, template: Path) -> Path:
    """The tiny completion pipeline, its template read from ``template``."""
    config = write_config(folder, model)
    text = config.read_text(encoding="utf-8")
    inline = 'template = "{{ text }}"'
    assert inline in text
    config.write_text(text.replace(inline, f"template_path = {json.dumps(str(template))}"))
    return config


def textcat_config(folder: Path, model: Path, shots: Path) -> Path:
    path = folder / "textcat.cfg"
    text = TEXTCAT_CONFIG.format(shots=json.dumps(str(shots)), model=json.dumps(str(model)))
    path.write_text(text, encoding="utf-8")
    return path


def write_shots(path: Path, shots: List[Dict[str, Any]]) -> Path:
    srsly.write_jsonl(path, shots)
    return path


def annotate_args(config: Path, inp: Path, out: Path) -> List[str]:
    return ["annotate", str(config), str(inp), str(out), "--quiet"]


def assert_resume_refused(args: List[str], out: Path, capsys: Any) -> None:
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "[E600]" in err and "different config" in err and "Traceback" not in err
    assert out.read_bytes() == before  # nothing of the new config was mixed in


def test_edited_model_config_misses_the_cache_and_refuses_resume(
    tmp_path: Path, model_copy: Path, capsys: Any
) -> None:
    config = write_config(tmp_path, model_copy)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(6))
    cache = tmp_path / "shared.cache.sqlite"
    first = tmp_path / "first.jsonl"
    run(config, inp, first, cache=cache)
    assert run(config, inp, tmp_path / "again.jsonl", cache=cache).cache_hits == 6

    data = json.loads((model_copy / "config.json").read_text(encoding="utf-8"))
    data["rope_theta"] = 500000.0
    (model_copy / "config.json").write_text(json.dumps(data, indent=2), encoding="utf-8")

    edited = run(config, inp, tmp_path / "edited.jsonl", cache=cache)
    assert edited.cache_hits == 0 and edited.done == 6
    assert_resume_refused(annotate_args(config, inp, first), first, capsys)


def test_edited_template_file_refuses_resume(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    template = tmp_path / "prompt.jinja"
    template.write_text("{{ text }}", encoding="utf-8")
    config = template_config(tmp_path, tiny_hf, template)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    out = tmp_path / "out.jsonl"
    args = annotate_args(config, inp, out)
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0  # untouched: resumes (nothing left to do)
    template.write_text("Answer briefly. {{ text }}", encoding="utf-8")
    assert_resume_refused(args, out, capsys)


def test_edited_fewshot_file_refuses_resume(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    shots = write_shots(tmp_path / "shots.jsonl", [{"text": "Rates rose.", "label": "business"}])
    config = textcat_config(tmp_path, tiny_hf, shots)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    out = tmp_path / "out.jsonl"
    args = annotate_args(config, inp, out)
    assert main(args) == 0
    write_shots(shots, [{"text": "The match was won.", "label": "sport"}])
    assert_resume_refused(args, out, capsys)


def test_hash_follows_named_files_and_ignores_others(tmp_path: Path, tiny_hf: Path) -> None:
    template = tmp_path / "prompt.jinja"
    template.write_text("{{ text }}", encoding="utf-8")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not named by the config", encoding="utf-8")
    config = template_config(tmp_path, tiny_hf, template)

    def hash_now() -> str:
        return config_hash(load_pipeline(config, overrides={}))

    first = hash_now()
    unrelated.write_text("edited, and still not named by the config", encoding="utf-8")
    assert hash_now() == first
    template.write_text("Answer briefly. {{ text }}", encoding="utf-8")
    changed = hash_now()
    assert changed != first
    template.write_text("{{ text }}", encoding="utf-8")
    assert hash_now() == first  # contents, not file versions


def test_hash_follows_interpolated_paths(tmp_path: Path, tiny_hf: Path) -> None:
    shots = write_shots(tmp_path / "shots.jsonl", [{"text": "Rates rose.", "label": "business"}])
    config = textcat_config(tmp_path, tiny_hf, shots)
    first = config_hash(load_pipeline(config, overrides={}))
    write_shots(shots, [{"text": "Prices fell.", "label": "business"}])
    assert config_hash(load_pipeline(config, overrides={})) != first


def test_unreadable_named_file_is_a_coded_error(
    tmp_path: Path, tiny_hf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = tmp_path / "prompt.jinja"
    template.write_text("{{ text }}", encoding="utf-8")
    nlp = load_pipeline(template_config(tmp_path, tiny_hf, template), overrides={})

    def unreadable(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(identity, "file_digest", unreadable)
    with pytest.raises(PipelineError, match=r"\[E101\].*prompt\.jinja.*template_path"):
        config_hash(nlp)


def test_server_call_settings_do_not_change_the_hash_but_the_served_model_does() -> None:
    """A resume with a longer timeout (or other retries, concurrency, breaker) is the same
    run; another served model is not."""
    import spacy

    from ..fixtures.fake_server import FakeServer

    def hashed(**model: Any) -> str:
        nlp = spacy.blank("en")
        block = {"@llama_models": "spacy-llama.OpenAICompatible.v1", "context_length": 512}
        nlp.add_pipe(
            "llama",
            config={
                "model": {**block, **model},
                "task": {"@llama_tasks": "spacy-llama.Completion.v1", "chat": False},
            },
        )
        return config_hash(nlp)

    with FakeServer() as fake:
        base = hashed(base_url=fake.url)
        patient = hashed(base_url=fake.url, timeout=600.0, max_retries=9, max_concurrency=2)
        assert patient == base
        assert hashed(base_url=fake.url, logprobs=False) != base


def test_hash_follows_the_packaged_default_template(tmp_path: Path, tiny_hf: Path) -> None:
    """No template in the config: the package's default renders the prompt, so a package
    upgrade that edits it must change the hash (and refuse a --resume across it)."""
    from spacy_llama.tasks.prompt import PromptTemplate

    config = write_config(tmp_path, tiny_hf)
    nlp = load_pipeline(config, overrides={})
    first = config_hash(nlp)
    task = nlp.get_pipe("llama").task  # type: ignore[attr-defined]
    assert isinstance(task.template, PromptTemplate)
    assert config_hash(nlp) == first
    task.template = PromptTemplate(task.template.source + "\nAnswer briefly.")
    assert config_hash(nlp) != first
