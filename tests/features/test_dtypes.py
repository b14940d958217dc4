"""The model block's dtype decides the LLaMA's dtype, with the llama component's checks
(models/placement.py); the listeners always get float32 features."""

from __future__ import annotations

import numpy
import pytest
import torch

from .builders import TEXTS, listener_nlp


def test_bfloat16_weights_give_float32_features(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.model.dtype": "bfloat16"})
    trf = nlp.get_pipe("transformer").model
    assert trf.llama.dtype == torch.bfloat16
    states = trf.predict([nlp.make_doc(TEXTS[0])]).model_output.last_hidden_state
    assert states.dtype == torch.float32 and bool(torch.isfinite(states).all())


def test_bfloat16_on_a_cpu_without_onednn_bf16_warns_as_the_component_does(
    tiny_hf, avx2_cpu
) -> None:
    from spacy_llama.models.loading import clear_loaded_models

    clear_loaded_models()  # load again, on "this" CPU
    with pytest.warns(UserWarning, match=r"dtype bfloat16: .*Use dtype = \"float32\""):
        listener_nlp(tiny_hf, {"components.transformer.model.model.dtype": "bfloat16"})
    clear_loaded_models()


def test_auto_is_float32_on_cpu(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.model.dtype": "auto"})
    trf = nlp.get_pipe("transformer").model
    assert trf.llama.dtype == torch.float32
    out = trf.predict([nlp.make_doc(TEXTS[1])])
    assert numpy.asarray(out.model_output.last_hidden_state).dtype == numpy.float32
