"""After training: merged adapters at inference, adapters only in the saved pipeline,
the fingerprint follows the adapter weights, and a foreign base model is refused."""

from __future__ import annotations

import copy

import pytest
import spacy
import torch
from thinc.api import SGD

from spacy_llama.errors import TrainingError
from spacy_llama.tasks.labels import softmax
from spacy_llama.training.losses import candidate_scores

from ..fixtures.tiny import make_tiny_hf
from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp


def _trained(path, steps: int = 3):
    torch.manual_seed(0)
    nlp = textcat_nlp(path, adapter=adapter_block())
    opt = SGD(0.1, L2=0.0, grad_clip=0.0)
    for _ in range(steps):
        nlp.update(cat_examples(nlp), sgd=opt)
    return nlp


def test_predictions_after_update_are_the_merged_models(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    before = [nlp(t).cats for t in TEXTS]
    pipe = nlp.get_pipe("llama")
    fast_before = pipe.engine.fast
    opt = SGD(0.1, L2=0.0, grad_clip=0.0)
    for _ in range(3):
        nlp.update(cat_examples(nlp), sgd=opt)
    after = [nlp(t).cats for t in TEXTS]
    assert after != before
    assert pipe.engine.fast is not fast_before  # rebuilt from the merged weights
    merged = copy.deepcopy(pipe.adapter.peft).merge_and_unload()  # peft's own merge
    with torch.no_grad():
        for text, cats in zip(TEXTS, after):
            req = pipe.task.requests([nlp.make_doc(text)])[0]
            values = candidate_scores(pipe.task, pipe.model, merged, req).tolist()
            want = dict(zip(["pos", "neg"], softmax(values)))
            assert cats == pytest.approx(want, abs=1e-4)


def test_adapters_round_trip_through_disk(tiny_hf, tmp_path) -> None:
    nlp = _trained(tiny_hf)
    want = [nlp(t).cats for t in TEXTS]
    nlp.to_disk(tmp_path / "p")
    saved = sorted(p.name for p in (tmp_path / "p" / "llama").rglob("*") if p.is_file())
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved
    weights = (tmp_path / "p" / "llama" / "adapter" / "adapter_model.safetensors").stat().st_size
    base = sum(p.stat().st_size for p in tiny_hf.glob("*.safetensors"))
    assert weights < base / 4  # adapters only, never the base weights
    loaded = spacy.load(tmp_path / "p")
    assert [loaded(t).cats for t in TEXTS] == want  # identical
    fresh = textcat_nlp(tiny_hf, adapter=adapter_block())
    assert [fresh(t).cats for t in TEXTS] != [loaded(t).cats for t in TEXTS]
    blob = nlp.get_pipe("llama").to_bytes()
    fresh.get_pipe("llama").from_bytes(blob)
    assert [fresh(t).cats for t in TEXTS] == want  # identical


def test_fingerprint_follows_the_adapter_weights(tiny_hf) -> None:
    plain = textcat_nlp(tiny_hf).get_pipe("llama").model.fingerprint
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    pipe = nlp.get_pipe("llama")
    first = pipe.model.fingerprint
    assert first != plain
    nlp.update(cat_examples(nlp), sgd=SGD(0.1))
    nlp(TEXTS[0])
    assert pipe.model.fingerprint != first
    key = pipe.engine.cache_key([1, 2, 3])
    nlp.update(cat_examples(nlp), sgd=SGD(0.1))
    nlp(TEXTS[0])
    assert pipe.engine.cache_key([1, 2, 3]) != key  # response-cache keys follow


def test_adapter_on_a_different_base_model_is_refused(tiny_hf, tmp_path) -> None:
    nlp = _trained(tiny_hf, steps=1)
    nlp.get_pipe("llama").to_disk(tmp_path / "llama")
    other = make_tiny_hf(tmp_path / "other", seed=1)
    pipe = textcat_nlp(other, adapter=adapter_block()).get_pipe("llama")
    with pytest.raises(TrainingError, match=r"\[E509\].*tiny_hf.*other"):
        pipe.from_disk(tmp_path / "llama")
    wider = make_tiny_hf(tmp_path / "wider", config={"hidden_size": 128})
    pipe = textcat_nlp(wider, adapter=adapter_block()).get_pipe("llama")
    with pytest.raises(TrainingError, match=r"\[E509\].*'hidden_size': 64.*'hidden_size': 128"):
        pipe.from_disk(tmp_path / "llama")


@pytest.mark.parametrize("prompt_lookup", [True, False])
def test_generation_after_update_equals_generate_of_the_merged_model(
    tiny_hf, prompt_lookup: bool
) -> None:
    """Trained Completion: the fused decoder on the merged weights decodes token for token
    what transformers' generate decodes with peft's own merge (EOS off: length decides)."""
    from spacy_llama.types import GenerationRequest

    from .builders import answer_examples

    torch.manual_seed(0)
    nlp = spacy.blank("en")
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    nlp.add_pipe(
        "llama",
        config={
            "model": model,
            "task": {"@llama_tasks": "spacy-llama.Completion.v1", "chat": False},
            "generation": {"max_new_tokens": 8},
            "prompt_lookup": prompt_lookup,
            "adapter": adapter_block(),
        },
    )
    pipe = nlp.get_pipe("llama")
    pipe.engine._stop_ids = []
    before = pipe.engine.run([GenerationRequest(prompt=TEXTS[0])])[0].token_ids
    opt = SGD(0.05, L2=0.0, grad_clip=0.0)
    examples = answer_examples(nlp, "llama_completion", ["Paris Paris Paris."] * len(TEXTS))
    for _ in range(5):
        nlp.update(examples, sgd=opt)
    nlp("sync")  # the next prediction merges the adapters
    merged = copy.deepcopy(pipe.adapter.peft).merge_and_unload().eval()
    tok = pipe.model.tokenizer
    outputs = []
    for text in TEXTS:
        got = pipe.engine.run([GenerationRequest(prompt=text)])[0].token_ids
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = merged.generate(
                **ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        assert got == out[0, ids["input_ids"].shape[1] :].tolist()
        outputs.append(got)
    assert outputs[0] != before  # training changed what it writes
