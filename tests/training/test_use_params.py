"""spaCy's train loop evaluates and saves inside ``nlp.use_params(optimizer.averages)``
(Adam.v1 keeps averages by default): the component must predict with the averaged adapter
weights there, and get its own weights back after."""

from __future__ import annotations

import torch
from thinc.api import Adam

from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp


def test_use_params_predicts_with_the_optimizers_averages(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    pipe = nlp.get_pipe("llama")
    egs = cat_examples(nlp)
    opt = Adam(0.05, use_averages=True)
    for _ in range(3):
        nlp.update(egs, sgd=opt)
    assert opt.averages
    weights = {n: p.detach().clone() for n, p in pipe.adapter.peft.named_parameters()}
    trained = [nlp(t).cats for t in TEXTS]
    trained_fp = pipe.model.fingerprint
    with nlp.use_params(opt.averages):
        averaged = [nlp(t).cats for t in TEXTS]
        now = dict(pipe.adapter.peft.named_parameters())
        for (key, name), value in opt.averages.items():
            assert key == pipe.adapter.shim.id
            assert torch.equal(now[name].detach(), torch.as_tensor(value))
        assert pipe.model.fingerprint != trained_fp  # cached answers are not reused
    assert averaged != trained
    for name, p in pipe.adapter.peft.named_parameters():
        assert torch.equal(p.detach(), weights[name]), name
    assert [nlp(t).cats for t in TEXTS] == trained
    assert pipe.model.fingerprint == trained_fp


def test_use_params_without_values_for_the_adapter_changes_nothing(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    before = [nlp(t).cats for t in TEXTS]
    with nlp.use_params({(12345, "other.weight"): torch.zeros(2).numpy()}):
        assert [nlp(t).cats for t in TEXTS] == before
