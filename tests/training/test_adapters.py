"""The LoRA block: build-time checks, an own copy of the shared model, frozen base weights,
and the optimizer spaCy passes in (one SGD step checked by hand, gradient accumulation)."""

from __future__ import annotations

import pytest
import torch
from thinc.api import SGD

from spacy_llama.errors import TrainingError

from ..fixtures.fake_server import FakeServer
from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp


def test_no_adapter_block_is_not_trainable(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf)
    pipe = nlp.get_pipe("llama")
    assert not pipe.is_trainable
    assert nlp.update(cat_examples(nlp)) == {}  # no loss, nothing changed


def test_adapter_layers_and_targets(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(layers=1, target_modules=["q_proj"]))
    names = [n for n, p in nlp.get_pipe("llama").adapter.peft.named_parameters() if p.requires_grad]
    # Only the top layer (of 2) gets adapters, only on q_proj: one A and one B.
    assert len(names) == 2
    assert all(".layers.1.self_attn.q_proj.lora_" in n for n in names), names


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"r": 0}, r"\[E500\].*r = 0"),
        ({"dropout": 1.5}, r"\[E500\].*dropout"),
        ({"layers": 3}, r"\[E500\].*layers = 3.*has 2 layers"),
        ({"target_modules": ["query"]}, r"\[E504\].*\['query'\].*q_proj"),
    ],
)
def test_bad_adapter_settings_fail_at_build(tiny_hf, settings, match) -> None:
    with pytest.raises(TrainingError, match=match):
        textcat_nlp(tiny_hf, adapter=adapter_block(**settings))


def test_adapter_with_int8_is_a_config_error(tiny_hf) -> None:
    import spacy

    from ..fixtures.helpers import tiny_llama_config

    nlp = spacy.blank("en")
    cfg = tiny_llama_config(tiny_hf, quantize="int8", adapter=adapter_block())
    with pytest.raises(TrainingError, match=r"\[E502\].*int8"):
        nlp.add_pipe("llama", config=cfg)


def test_adapter_with_server_model_is_a_config_error() -> None:
    import spacy

    with FakeServer() as fake:
        nlp = spacy.blank("en")
        cfg = {
            "model": {
                "@llama_models": "spacy-llama.OpenAICompatible.v1",
                "base_url": fake.url,
                "context_length": 256,
            },
            "adapter": adapter_block(),
        }
        with pytest.raises(TrainingError, match=r"\[E501\].*served over HTTP"):
            nlp.add_pipe("llama", config=cfg)


def test_untrainable_task_is_a_config_error(tiny_hf) -> None:
    import spacy

    nlp = spacy.blank("en")
    cfg = {
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"},
        "task": {"@llama_tasks": "spacy-llama.Surprisal.v1"},
        "adapter": adapter_block(),
    }
    with pytest.raises(TrainingError, match=r"\[E503\].*Surprisal"):
        nlp.add_pipe("llama", config=cfg)


def test_training_leaves_a_second_pipeline_on_the_same_model_alone(tiny_hf) -> None:
    other = textcat_nlp(tiny_hf)
    before = [other(t).cats for t in TEXTS]
    shared = other.get_pipe("llama").model.model
    weights = {k: v.clone() for k, v in shared.state_dict().items()}
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    pipe = nlp.get_pipe("llama")
    assert pipe.model.model is not shared  # its own module tree
    trained_before = nlp(TEXTS[0]).cats
    opt = SGD(0.1)
    for _ in range(3):
        nlp.update(cat_examples(nlp), sgd=opt)
    assert nlp(TEXTS[0]).cats != trained_before  # the trained pipeline did change
    assert [other(t).cats for t in TEXTS] == before
    assert all(torch.equal(weights[k], v) for k, v in shared.state_dict().items())
    assert all(p.grad is None for p in shared.parameters())


def test_only_adapter_weights_get_gradients(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    pipe = nlp.get_pipe("llama")
    pipe.update(cat_examples(nlp))  # sgd=None: gradients only (nlp.update would step)
    params = dict(pipe.adapter.peft.named_parameters())
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert with_grad == {n for n, p in params.items() if "lora_" in n}
    # lora_B starts at zero, so only its gradients are non-zero on the first step
    assert any(params[n].grad.abs().sum() > 0 for n in with_grad if "lora_B" in n)


def _adapter_params(pipe) -> dict:
    return {
        n: p.detach().clone() for n, p in pipe.adapter.peft.named_parameters() if p.requires_grad
    }


def test_one_sgd_step_is_w_minus_lr_grad(tiny_hf) -> None:
    lr = 0.05
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    pipe = nlp.get_pipe("llama")
    # a first step so that lora_B (initialised to zeros) and so every gradient is non-zero
    nlp.update(cat_examples(nlp), sgd=SGD(0.1, L2=0.0, grad_clip=0.0))
    pipe.update(cat_examples(nlp))  # gradients, no step (nlp.update would step)
    before = _adapter_params(pipe)
    grads = {n: p.grad.clone() for n, p in pipe.adapter.peft.named_parameters() if p.requires_grad}
    assert all(g.abs().sum() > 0 for g in grads.values())
    pipe.finish_update(SGD(lr, L2=0.0, grad_clip=0.0))
    after = _adapter_params(pipe)
    for name, w in before.items():
        torch.testing.assert_close(after[name], w - lr * grads[name], rtol=1e-5, atol=1e-7)


def test_accumulated_gradients_equal_one_big_batch(tiny_hf) -> None:
    """[training] accumulate_gradient: update(sgd=None) twice, then finish_update."""
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    a = nlp.get_pipe("llama")
    b = textcat_nlp(tiny_hf, adapter=adapter_block()).get_pipe("llama")
    b.adapter.peft.load_state_dict(a.adapter.peft.state_dict())  # same random lora_A
    start = _adapter_params(a)
    egs = cat_examples(nlp)
    a.update(egs[:2])
    a.update(egs[2:])
    b.update(egs)
    a.finish_update(SGD(0.1, L2=0.0, grad_clip=0.0))
    b.finish_update(SGD(0.1, L2=0.0, grad_clip=0.0))
    for (name, pa), pb in zip(_adapter_params(a).items(), _adapter_params(b).values()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(start[n], p) for n, p in _adapter_params(a).items())
