"""TransformerModel.v2's ``normalize``: every hidden layer through the model's own final norm
(issue 26: a decoder's middle layers carry massive activations, which swamp a listener's
linear layer and a mix of layers), the last layer as it was; v1 unchanged."""

from __future__ import annotations

from typing import Any, Dict

import numpy
import pytest
import spacy
import torch
from spacy.util import registry

from spacy_llama.errors import FeatureError
from spacy_llama.features import batching

from .builders import TEXTS, examples, listener_nlp, train_steps
from .test_features import span_states

V2 = "spacy-llama.TransformerModel.v2"


def v2(layer: Any, normalize: Any = True) -> Dict[str, Any]:
    return {
        "components.transformer.model.@architectures": V2,
        "components.transformer.model.layer": layer,
        "components.transformer.model.normalize": normalize,
    }


def test_hidden_states_normalize_every_layer_but_the_last(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf)
    llama = nlp.get_pipe("transformer").model.llama
    base, pad = llama.model.base_model, llama.pad_token_id
    rows = [llama.encode(t, add_special_tokens=True) for t in TEXTS]
    raw = batching.hidden_states(base, rows, pad, "mix", 4096)
    normed = batching.hidden_states(base, rows, pad, "mix", 4096, normalize=True)
    assert normed.shape == raw.shape
    with torch.inference_mode():
        for layer in range(raw.shape[0] - 1):
            expected = base.norm(torch.from_numpy(raw[layer])).numpy()
            assert numpy.allclose(normed[layer], expected, atol=1e-5)
            assert not numpy.allclose(normed[layer], raw[layer], atol=1e-3)
    assert numpy.array_equal(normed[-1], raw[-1])  # already through the final norm
    one = batching.hidden_states(base, rows, pad, 1, 4096, normalize=True)
    assert numpy.array_equal(one, normed[1])


def test_v2_normalizes_a_middle_layer_and_leaves_the_last_as_v1(tiny_hf) -> None:
    v1_middle = span_states(listener_nlp(tiny_hf, {"components.transformer.model.layer": 1}), TEXTS)
    v2_middle = span_states(listener_nlp(tiny_hf, v2(1)), TEXTS)
    v2_raw = span_states(listener_nlp(tiny_hf, v2(1, normalize=False)), TEXTS)
    v1_last = span_states(listener_nlp(tiny_hf), TEXTS)
    v2_last = span_states(listener_nlp(tiny_hf, v2(-1)), TEXTS)
    for doc in range(len(TEXTS)):
        for a, b, c, d, e in zip(v1_middle[doc], v2_middle[doc], v2_raw[doc], v1_last[doc],
                                 v2_last[doc]):  # fmt: skip
            rms = numpy.sqrt((b**2).mean(-1))
            assert not numpy.allclose(a, b, atol=1e-3)
            assert numpy.array_equal(a, c)  # normalize = false is v1
            assert numpy.array_equal(d, e)
            # the tiny model's norm weight is 1: unit root mean square per piece
            assert numpy.allclose(rms, 1.0, atol=1e-2), rms


def test_a_normalized_mix_trains(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, v2("mix"))
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("transformer").model
    before = numpy.array(trf.get_param("mix_weights"))
    losses = train_steps(nlp, egs, optimizer, steps=3)
    assert losses[-1]["textcat"] != losses[0]["textcat"]
    assert not numpy.array_equal(before, trf.get_param("mix_weights"))


def test_bad_normalize_and_a_model_without_a_final_norm_are_named(tiny_hf, monkeypatch) -> None:
    llama = listener_nlp(tiny_hf).get_pipe("transformer").model.llama
    build = registry.architectures.get(V2)
    # a config is type-checked before this; a Python call is not
    with pytest.raises(FeatureError, match=r"\[E766\].*normalize = 'yes'"):
        build(llama, lambda docs: [], normalize="yes")
    monkeypatch.delattr(llama.model.base_model, "norm")
    with pytest.raises(FeatureError, match=r"\[E767\].*no `norm` module.*normalize = false"):
        listener_nlp(tiny_hf, v2(-1))
    listener_nlp(tiny_hf, v2(-1, normalize=False))  # raw states need no norm


def test_a_saved_v2_pipeline_loads_with_its_normalize(tiny_hf, tmp_path) -> None:
    nlp = listener_nlp(tiny_hf, v2(1))
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("transformer").model.attrs["normalize"] is True
    for a, b in zip(span_states(nlp, TEXTS), span_states(loaded, TEXTS)):
        for x, y in zip(a, b):
            assert numpy.array_equal(x, y)
