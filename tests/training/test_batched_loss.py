"""The batched loss (shared prompt prefix, one prompt pass per request with its KV cache
expanded over the candidates, padded micro-batches) has the value and the adapter gradients of
one plain forward per row (tests/training/reference.py)."""

from __future__ import annotations

import math
from typing import Any, Dict, List

import pytest
import torch

from spacy_llama.training.capabilities import task_loss

from .builders import (
    TEXTS,
    adapter_block,
    answer_examples,
    cat_examples,
    generation_nlp,
    textcat_nlp,
)
from .reference import reference_loss

V2 = {"@llama_tasks": "spacy-llama.TextCat.v2"}
TEXTCAT_CASES: Dict[str, Dict[str, Any]] = {
    "exclusive": {},
    "exclusive-sum": {"length_normalize": False},
    "multi-label": {"exclusive": False},
    "calibrated": {"calibrate": True},
    "calibrated-multi-label": {"calibrate": True, "exclusive": False},
    "v2-three-content-free": V2,
    "v2-first-word-multi-label": {**V2, "label_score": "first_word", "exclusive": False},
    # " the" is one token of the tiny tokenizer: scored from the prompt's last position only
    "one-token-and-longer-labels": {"verbalizers": {"pos": "the", "neg": "London city"}},
    "v2-one-token-label": {**V2, "verbalizers": {"pos": "the"}},
}
OPTIONS = [
    {"batch_size": None, "share_prompt": True},
    {"batch_size": 3, "share_prompt": True},
    {"batch_size": 1, "share_prompt": False},
]


def _perturb(pipe: Any) -> None:
    """LoRA's B starts at zero (no gradient reaches A): give both a random value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in pipe.adapter.peft.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.05)


def _value_and_grads(pipe: Any, compute: Any) -> tuple:
    pipe.adapter.peft.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in pipe.adapter.peft.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


def _check_equal(pipe: Any, egs: List[Any]) -> None:
    args = (pipe.task, pipe.model, pipe.adapter.peft)
    want, want_grads = _value_and_grads(pipe, lambda: reference_loss(*args, egs))
    assert want > 0 and any(float(g.abs().max()) > 0 for g in want_grads.values())
    # float32 sums in another order: differences relative to the gradients' scale
    scale = max(float(g.abs().max()) for g in want_grads.values())
    for opts in OPTIONS:
        got, grads = _value_and_grads(pipe, lambda o=opts: task_loss(*args, egs, **o)[0])
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-5), (opts, got, want)
        for name, g in grads.items():
            where = f"{name} {opts}"
            torch.testing.assert_close(
                g, want_grads[name], rtol=1e-3, atol=1e-4 * scale, msg=lambda m, w=where: w + m
            )


@pytest.mark.parametrize("case", list(TEXTCAT_CASES))
def test_textcat_loss_equals_the_per_row_loss(tiny_hf, case) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), **TEXTCAT_CASES[case])
    pipe = nlp.get_pipe("llama")
    _perturb(pipe)
    _check_equal(pipe, cat_examples(nlp, TEXTS + TEXTS[:1]))


@pytest.mark.parametrize(
    "task,attr",
    [
        ({"@llama_tasks": "spacy-llama.Completion.v1"}, "llama_completion"),
        ({"@llama_tasks": "spacy-llama.Summary.v1", "max_words": 5}, "llama_summary"),
    ],
)
def test_answer_loss_equals_the_per_row_loss(tiny_hf, task, attr) -> None:
    nlp = generation_nlp(tiny_hf, task)
    pipe = nlp.get_pipe("llama")
    _perturb(pipe)
    answers = ["London city", "a fox", "Apple buys a startup in the U.K.", "cars"]
    _check_equal(pipe, answer_examples(nlp, attr, answers))


def test_calibrated_v2_loss_is_the_cross_entropy_of_the_predicted_cats(tiny_hf) -> None:
    """What is trained is what is scored: untrained (B = 0) the loss is -log of the gold
    label's probability in doc.cats, with TextCat.v2's prior averaged over its three
    content-free probes (the old loss took the first probe only and then misaligned docs)."""
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), **V2)
    pipe = nlp.get_pipe("llama")
    assert len(pipe.task.content_free_texts) == 3
    egs = cat_examples(nlp)
    docs = list(nlp.pipe([eg.predicted.text for eg in egs]))
    want = -sum(math.log(doc.cats[gold]) for doc, gold in zip(docs, ["pos", "neg"] * 2))
    with torch.no_grad():
        loss, n = task_loss(pipe.task, pipe.model, pipe.adapter.peft, egs, batch_size=4)
    assert n == 4
    assert math.isclose(float(loss), want, rel_tol=1e-4, abs_tol=1e-4), (float(loss), want)


def test_v3_loss_subtracts_the_same_share_of_the_prior_as_assign(tiny_hf) -> None:
    """TextCat.v3 (prior_weight 0.6): the loss is still -log of doc.cats' gold probability."""
    v3 = {"@llama_tasks": "spacy-llama.TextCat.v3"}
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block(), **v3)
    pipe = nlp.get_pipe("llama")
    assert pipe.task.prior_weight == 0.6
    egs = cat_examples(nlp)
    docs = list(nlp.pipe([eg.predicted.text for eg in egs]))
    want = -sum(math.log(doc.cats[gold]) for doc, gold in zip(docs, ["pos", "neg"] * 2))
    with torch.no_grad():
        loss, _ = task_loss(pipe.task, pipe.model, pipe.adapter.peft, egs, batch_size=4)
    assert math.isclose(float(loss), want, rel_tol=1e-4, abs_tol=1e-4), (float(loss), want)
