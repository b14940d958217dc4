"""The features themselves: a doc's hidden states do not depend on its batch, padding or
order (bit for bit, float32); every token gets pieces; the mix learns; frozen means no
autograd graph and no gradient into the LLaMA."""

from __future__ import annotations

from typing import List

import numpy
import torch

from spacy_llama.features import batching

from .builders import TEXTS, examples, listener_nlp


def span_states(nlp, texts: List[str]) -> List[List[numpy.ndarray]]:
    """Per doc, per span: the hidden states of the span's real pieces (padding cut off)."""
    trf = nlp.get_pipe("transformer")
    out = trf.model.predict([nlp.make_doc(t) for t in texts])
    result = []
    for data in out.doc_data:
        states = data.model_output.last_hidden_state
        result.append([states[s, :n].copy() for s, n in enumerate(data.wordpieces.lengths)])
    return result


def test_features_are_bit_identical_whatever_the_batch(tiny_hf, monkeypatch) -> None:
    monkeypatch.setenv("SPACY_LLAMA_FEATURE_CACHE_MB", "0")  # every call runs the model
    nlp = listener_nlp(tiny_hf)
    alone = [span_states(nlp, [t])[0] for t in TEXTS]
    together = span_states(nlp, TEXTS)
    reversed_ = span_states(nlp, TEXTS[::-1])[::-1]
    long_first = span_states(nlp, [TEXTS[3] * 3, TEXTS[1]])[1]  # much more padding
    for i, doc_spans in enumerate(alone):
        for s, states in enumerate(doc_spans):
            assert states.dtype == numpy.float32
            assert numpy.array_equal(states, together[i][s])
            assert numpy.array_equal(states, reversed_[i][s])
    for s, states in enumerate(alone[1]):
        assert numpy.array_equal(states, long_first[s])


def test_the_attention_setting_of_the_shared_model_is_restored(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf)
    llama = nlp.get_pipe("transformer").model.llama
    before = llama.model.config._attn_implementation
    seen = []
    with batching.eager_attention(llama.model.base_model):
        seen.append(llama.model.config._attn_implementation)
    assert seen == ["eager"] and llama.model.config._attn_implementation == before


def test_every_token_is_aligned_across_strided_windows(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf)
    docs = [nlp.make_doc(t) for t in TEXTS]
    out = nlp.get_pipe("transformer").model.predict(docs)
    for doc, data in zip(docs, out.doc_data):
        if len(doc) > 8:  # more than one window (window = 8 tokens, stride = 6)
            assert len(data.wordpieces) > 1
        assert list(data.align.lengths).count(0) == 0
        assert len(data.align.lengths) == len(doc)


def test_frozen_features_build_no_graph_and_only_the_mix_learns(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.layer": "mix"})
    docs = [nlp.make_doc(t) for t in TEXTS]
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("transformer").model
    llama_params = {n: p.detach().clone() for n, p in trf.llama.model.named_parameters()}
    before = trf.get_param("mix_weights").copy()
    losses: dict = {}
    for _ in range(3):
        nlp.update(egs, sgd=optimizer, losses=losses)
    out = trf.predict(docs[:1])
    assert not out.model_output.last_hidden_state.requires_grad
    assert not numpy.array_equal(before, trf.get_param("mix_weights"))
    for name, param in trf.llama.model.named_parameters():
        assert param.grad is None
        assert torch.equal(param, llama_params[name]), name
