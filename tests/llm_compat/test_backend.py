"""spacy-llama.SpacyLLM.v1 inside real spacy-llm pipelines, on the tiny model."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import spacy

from spacy_llama.errors import CompatError, PromptTooLongError
from spacy_llama.llm_compat import backend as backend_module
from spacy_llama.llm_compat.backend import SpacyLLMBackend, spacy_llm_v1
from spacy_llama.models.hf import hf_model_v1

TEXTS = [
    "Apple is looking at buying a U.K. startup for $1 billion.",
    "London is a big city in the United Kingdom.",
    "Marie Curie won the Nobel Prize in Physics in 1903.",
    "San Francisco considers banning sidewalk delivery robots.",
    "The quick brown fox jumps over the lazy dog.",
]
NER = {"@llm_tasks": "spacy.NER.v3", "labels": ["PERSON", "ORG", "GPE"]}
TEXTCAT = {
    "@llm_tasks": "spacy.TextCat.v3",
    "labels": ["business", "sport", "politics"],
    "exclusive_classes": True,
}


def model_block(path: Path, **extra: Any) -> Dict[str, Any]:
    return {
        "@llm_models": "spacy-llama.SpacyLLM.v1",
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
        "generation": {"max_new_tokens": 6},
        **extra,
    }


def llm_nlp(path: Path, task: Dict[str, Any], **model: Any) -> spacy.language.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("llm", config={"task": task, "model": model_block(path, **model), "save_io": True})
    return nlp


class CountingRun:
    """Wraps Engine.run: how often it is called and with how many requests."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.inner, self.calls = engine, engine.run, []  # type: ignore[var-annotated]
        engine.run = self

    def __call__(self, requests: List[Any]) -> Any:
        self.calls.append([r.prompt for r in requests])
        return self.inner(requests)


@pytest.mark.parametrize("task", [NER, TEXTCAT], ids=["NER.v3", "TextCat.v3"])
def test_every_prompt_of_a_pipe_batch_in_one_engine_call(tiny_long, task):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # spacy-llm's type check and sharding check pass
        nlp = llm_nlp(tiny_long, task)
    backend = nlp.get_pipe("llm")._model
    assert isinstance(backend, SpacyLLMBackend)
    counter = CountingRun(backend.engine)
    docs = list(nlp.pipe(TEXTS, batch_size=2))
    assert [len(c) for c in counter.calls] == [2, 2, 1]  # one call per pipe batch
    # each doc's prompt and response as spacy-llm saw them, in doc order
    flat = [p for call in counter.calls for p in call]
    for doc, prompt in zip(docs, flat):
        io = doc.user_data["llm_io"]["llm"]
        assert doc.text in io["prompt"][0]
        assert backend.chat and io["prompt"][0] in prompt  # sent through the chat template
    # the same prompt alone gives the same answer: responses went back to their docs
    alone = backend([[docs[3].user_data["llm_io"]["llm"]["prompt"][0]]])
    assert list(alone) == [docs[3].user_data["llm_io"]["llm"]["response"]]


def test_responses_keep_the_shape_of_the_prompts(tiny_long):
    backend = spacy_llm_v1(
        model=hf_model_v1(tiny_long, device="cpu"), generation={"max_new_tokens": 3}
    )
    counter = CountingRun(backend.engine)
    out = list(backend([["a b", "c d e"], [], ["f"]]))
    assert [len(x) for x in out] == [2, 0, 1]
    assert len(counter.calls) == 1 and len(counter.calls[0]) == 3
    assert out[0][1] == list(backend([["c d e"]]))[0][0]
    with pytest.raises(CompatError, match="E741"):
        list(backend(["not a list"]))  # type: ignore[list-item]


def test_context_length_is_the_prompt_budget_of_the_real_tokenizer(tiny_long):
    nlp = llm_nlp(tiny_long, NER)
    backend = nlp.get_pipe("llm")._model
    template = backend.model.count_tokens(backend._format("").prompt, add_special_tokens=False)
    assert template > 0  # the chat template's own tokens
    assert backend.context_length == 4096 - 6 - template
    from spacy_llm.ty import ModelWithContextLength

    assert isinstance(backend, ModelWithContextLength)


def test_sharding_task_cuts_a_long_doc_to_the_context(tmp_path_factory):
    """A doc longer than the context: spacy-llm's sharding (NER.v3), counting with
    spacy-llama.TokenCounter.v1, splits it by the backend's context_length, and every
    shard's prompt fits; with spacy-llm's word count it does not, and E742 says so."""
    from ..fixtures.tiny import make_tiny_hf

    short = make_tiny_hf(
        tmp_path_factory.mktemp("tiny_ctx"), config={"max_position_embeddings": 1536}
    )
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(short), "device": "cpu"}
    mapper = {
        "@llm_misc": "spacy.ShardMapper.v1",
        "n_token_estimator": {"@llm_misc": "spacy-llama.TokenCounter.v1", "model": model},
    }
    template = "Find {{ labels|join(', ') }} in: {{ text }}"
    nlp = llm_nlp(short, {**NER, "template": template, "shard_mapper": mapper})
    backend = nlp.get_pipe("llm")._model
    counter = CountingRun(backend.engine)
    long_text = " ".join(TEXTS * 40)  # ~3000 pieces of the tiny tokenizer
    doc = nlp(long_text)
    prompts = doc.user_data["llm_io"]["llm"]["prompt"]
    assert len(prompts) > 1  # sharded
    assert len(counter.calls) == 1 and len(counter.calls[0]) == len(prompts)
    for p in counter.calls[0]:
        assert (
            backend.model.count_tokens(p, add_special_tokens=False)
            <= backend.model.context_length - 6
        )
    by_words = llm_nlp(short, {**NER, "template": template})
    with pytest.raises(PromptTooLongError, match="E742.*TokenCounter"):
        by_words(long_text)


def test_a_prompt_too_long_errors_or_is_cut(tiny_long, tmp_path_factory, caplog):
    from ..fixtures.tiny import make_tiny_hf

    small = make_tiny_hf(tmp_path_factory.mktemp("tiny_small"))  # 256 positions
    model = hf_model_v1(small, device="cpu")
    long_prompt = "Instructions first. " + " ".join(TEXTS * 6) + " Answer:"
    strict = spacy_llm_v1(model=model, generation={"max_new_tokens": 4})
    with pytest.raises(PromptTooLongError, match="E742"):
        list(strict([[long_prompt]]))
    cut = spacy_llm_v1(model=model, generation={"max_new_tokens": 4}, on_overflow="truncate")
    counter = CountingRun(cut.engine)
    out = list(cut([[long_prompt]]))
    assert len(out[0]) == 1
    sent = counter.calls[0][0]
    assert "Instructions first." in sent and "Answer:" in sent and " ... " in sent
    assert cut.model.count_tokens(sent, add_special_tokens=False) <= 256 - 4
    assert "middle was cut" in caplog.text


def test_nothing_but_the_config_is_saved(tiny_long, tmp_path):
    nlp = llm_nlp(tiny_long, TEXTCAT)
    nlp.to_disk(tmp_path / "pipe")
    saved = sorted(
        p.relative_to(tmp_path / "pipe" / "llm").as_posix()
        for p in (tmp_path / "pipe" / "llm").rglob("*")
        if p.is_file()
    )
    assert saved and all(s.startswith("task") for s in saved)  # the task's cfg; no model part
    assert "spacy-llama.SpacyLLM.v1" in (tmp_path / "pipe" / "config.cfg").read_text()
    again = spacy.load(tmp_path / "pipe")
    doc = again("Apple is looking at buying a U.K. startup.")
    assert set(doc.cats) == {"business", "sport", "politics"}


def test_missing_spacy_llm_names_the_install_command(monkeypatch, tiny_long):
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Optional[Any]:
        return None if name == "spacy_llm" else real(name, *args)

    monkeypatch.setattr(backend_module.importlib.util, "find_spec", find_spec)
    with pytest.raises(CompatError, match=r"E740.*pip install 'spacy-llama\[spacy-llm\]'"):
        spacy_llm_v1(model=hf_model_v1(tiny_long, device="cpu"))


def test_bad_settings_are_named(tiny_long):
    model = hf_model_v1(tiny_long, device="cpu")
    with pytest.raises(CompatError, match="E743.*on_overflow"):
        spacy_llm_v1(model=model, on_overflow="shard")  # type: ignore[arg-type]
    with pytest.raises(CompatError, match="E743.*batch_size"):
        spacy_llm_v1(model=model, batch_size=0)
    from confection import ConfigValidationError

    with pytest.raises(ConfigValidationError, match="max_new_tokens"):
        spacy_llm_v1(model=model, generation={"max_new_tokens": 0})


def test_batching_benchmark_runs_end_to_end(tiny_long, capsys, tmp_path):
    import json
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from benchmarks import spacy_llm_batching

    args = ["--limit", "3", "--max-new-tokens", "4", "--batch-size", "2"]
    report = tmp_path / "batching.json"
    args += ["--model-path", str(tiny_long), "--json", str(report)]
    assert spacy_llm_batching.main(args) == 0
    out = capsys.readouterr().out
    assert "engine calls: A 3, B 2 (prompts per call: [2, 1])" in out
    got = json.loads(report.read_text())
    assert (got["docs"], got["engine_calls_a"], got["engine_calls_b"]) == (3, 3, 2)
    assert got["speedup"] == got["seconds_a"] / got["seconds_b"] > 0
    assert got["speedup_cpu"] == got["cpu_a"] / got["cpu_b"] > 0
    assert 0 <= got["same"] <= 3
