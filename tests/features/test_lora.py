"""freeze = false: the LoRA adapter of training/adapters.py trained from the listeners'
gradients. Only LoRA weights change (the base is bit-identical, also for a ``llama``
component on the same weights), each is stepped once per finish_update, predictions use
the merged adapter with no graph, and the adapter (only) round-trips through the folder."""

from __future__ import annotations

from collections import Counter

import numpy
import pytest
import spacy
import srsly
import torch
from safetensors.torch import load as load_safetensors

from spacy_llama.errors import TrainingError
from spacy_llama.features.layers import mix_layer_grads, scalar_mix

from ..fixtures.tiny import make_tiny_hf
from .builders import TEXTS, examples, listener_nlp, lora_overrides, train_steps


def _lora(trf) -> dict:
    params = trf.adapter.peft.named_parameters()
    return {n: p.detach().clone() for n, p in params if p.requires_grad}


def _states(trf, texts, nlp):
    return trf.predict([nlp.make_doc(t) for t in texts]).model_output.last_hidden_state


def test_lora_steps_lower_the_loss_and_change_only_lora_weights(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides())
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("transformer").model
    base = trf.adapter.peft.get_base_model()
    frozen = {n: p.detach().clone() for n, p in base.named_parameters() if "lora_" not in n}
    lora = _lora(trf)
    history = train_steps(nlp, egs, optimizer, steps=4)
    assert history[-1]["textcat"] < history[0]["textcat"]
    after = _lora(trf)
    changed = [n for n in lora if not torch.equal(lora[n], after[n])]
    assert any(".lora_B." in n for n in changed)  # B starts at 0: only a gradient moves it
    for name, param in base.named_parameters():
        if "lora_" not in name:
            assert not param.requires_grad and param.grad is None, name
            assert torch.equal(param, frozen[name]), name


def test_each_lora_weight_is_stepped_once_per_finish_update(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides())
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf_pipe = nlp.get_pipe("transformer")
    trf = trf_pipe.model
    assert [s for node in trf.walk() for s in node.shims] == [trf.adapter.shim]
    nlp.update(egs, sgd=False)
    keys: list = []

    def counting(key, weights, gradient, **kwargs):
        keys.append(key)
        return optimizer(key, weights, gradient, **kwargs)

    trf_pipe.finish_update(counting)
    stepped = Counter(name for shim_id, name in keys if shim_id == trf.adapter.shim.id)
    assert set(stepped) == set(_lora(trf)) and set(stepped.values()) == {1}


def test_predictions_use_the_merged_adapter_with_no_graph(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides(layer="mix"))
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("transformer").model
    untrained = _states(trf, TEXTS[:2], nlp).clone()
    train_steps(nlp, egs, optimizer, steps=3)
    assert not numpy.array_equal(trf.get_param("mix_weights"), numpy.zeros((3,), "f"))
    lora_b = [p for n, p in _lora(trf).items() if ".lora_B." in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # the mix passed its gradient on
    predicted = _states(trf, TEXTS[:2], nlp)
    assert not predicted.requires_grad
    assert all(p.grad is None or not p.grad.any() for p in trf.adapter.peft.parameters())
    trained, _ = trf.begin_update([nlp.make_doc(t) for t in TEXTS[:2]])  # the LoRA tree
    assert not torch.allclose(predicted, untrained, atol=1e-4)
    assert torch.allclose(predicted, trained.model_output.last_hidden_state, atol=1e-5)


def test_the_mix_passes_its_gradient_to_each_layer() -> None:
    rng = numpy.random.default_rng(0)
    layers = rng.normal(size=(3, 2, 4, 5)).astype("f")
    weights, gamma = rng.normal(size=(3,)).astype("f"), numpy.array([1.5], "f")
    d_out = rng.normal(size=(2, 4, 5)).astype("f")
    grads = mix_layer_grads(weights, gamma, d_out)
    eps = 1e-2
    for index in [(0, 0, 0, 0), (1, 1, 2, 3), (2, 0, 3, 4)]:
        bumped = layers.copy()
        bumped[index] += eps
        diff = scalar_mix(bumped, weights, gamma)[0] - scalar_mix(layers, weights, gamma)[0]
        assert abs(float((diff * d_out).sum()) / eps - grads[index]) < 1e-3


def test_the_adapter_alone_round_trips_through_the_folder(tiny_hf, tmp_path) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides())
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("transformer").model
    base_fingerprint = trf.adapter.base_fingerprint
    before = trf.fingerprint
    train_steps(nlp, egs, optimizer, steps=3)
    assert trf.fingerprint not in (before, base_fingerprint)  # follows the adapter weights
    nlp.to_disk(tmp_path / "pipe")
    folder = tmp_path / "pipe" / "transformer"
    assert {p.name for p in folder.rglob("*") if p.is_file()} == {"cfg", "model"}
    (shim_bytes,) = [b for shims in srsly.msgpack_loads((folder / "model").read_bytes())["shims"]
                     for b in shims]  # fmt: skip
    files = srsly.msgpack_loads(shim_bytes)
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json"}
    saved = load_safetensors(files["adapter_model.safetensors"])
    assert saved and all(".lora_" in k for k in saved)
    weights = sum(p.stat().st_size for p in tiny_hf.glob("*.safetensors"))
    assert (folder / "model").stat().st_size < weights / 4
    loaded = spacy.load(tmp_path / "pipe")
    trf2 = loaded.get_pipe("transformer").model
    assert torch.equal(_states(trf2, TEXTS, loaded), _states(trf, TEXTS, nlp))
    assert trf2.fingerprint == trf.fingerprint
    assert loaded(TEXTS[0]).cats == nlp(TEXTS[0]).cats


def test_a_llama_component_on_the_same_weights_is_left_alone(tiny_hf) -> None:
    """The rule: trainable features train their own LoRA trees over the shared, frozen base
    tensors; the base is never written, so the llama component keeps its weights and
    answers, and the pipeline still holds one copy of the base weights."""
    nlp = listener_nlp(tiny_hf, lora_overrides())
    block = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu",
             "dtype": "float32"}  # fmt: skip
    nlp.add_pipe("llama", config={"model": block, "generation": {"max_new_tokens": 4}})
    llama = nlp.get_pipe("llama").model
    trf = nlp.get_pipe("transformer").model
    assert trf.llama is not llama and trf.adapter.base_fingerprint == llama.fingerprint
    shared = {p.data_ptr() for p in llama.model.parameters()}
    tree = trf.adapter.peft.get_base_model()
    tree_base = {p.data_ptr() for n, p in tree.named_parameters() if "lora_" not in n}
    assert tree_base <= shared  # the LoRA tree's base tensors are the llama's: no copy
    weights = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    fingerprint = llama.fingerprint
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    answer = nlp(TEXTS[1])._.llama_completion
    train_steps(nlp, egs, optimizer, steps=3)
    assert trf.fingerprint != fingerprint
    for name, param in llama.model.named_parameters():
        assert torch.equal(param, weights[name]), name
    assert llama.fingerprint == fingerprint
    assert nlp(TEXTS[1])._.llama_completion == answer


def test_an_adapter_saved_for_another_base_is_refused(tiny_hf, tmp_path) -> None:
    nlp = listener_nlp(tiny_hf, lora_overrides())
    nlp.initialize(lambda: examples(nlp))
    nlp.to_disk(tmp_path / "pipe")
    other = make_tiny_hf(tmp_path / "other", seed=1)
    config = {"components": {"transformer": {"model": {"model": {"path": str(other)}}}}}
    with pytest.raises(TrainingError, match=r"\[E509\].*'transformer.model'.*tiny_hf.*other"):
        spacy.load(tmp_path / "pipe", config=config)
