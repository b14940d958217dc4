"""``layer = k`` gives transformers' ``output_hidden_states[k]`` for the same pieces, for every
k of a model (0 = the embeddings, the last = after the final norm; negative k counts from
the end): a layer off by one fails here for every k."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ..fixtures.tiny import make_tiny_hf
from .builders import TEXTS, listener_nlp

N_LAYERS = 3


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_hf(tmp_path_factory.mktemp("layers"), config={"num_hidden_layers": N_LAYERS})


@pytest.fixture(scope="module")
def reference(three_layers: Path) -> Any:
    """transformers' own LlamaForCausalLM of the same folder (float32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(three_layers), torch_dtype=torch.float32)
    return model.eval()


@pytest.mark.parametrize("layer", [*range(N_LAYERS + 1), -1, -N_LAYERS - 1])
def test_layer_k_is_transformers_hidden_state_k(three_layers, reference, layer) -> None:
    nlp = listener_nlp(three_layers, {"components.transformer.model.layer": layer})
    out = nlp.get_pipe("transformer").model.predict([nlp.make_doc(t) for t in TEXTS])
    compared = 0
    for data in out.doc_data:
        states = data.model_output.last_hidden_state
        pieces = data.wordpieces
        for s, n in enumerate(pieces.lengths):
            ids = torch.tensor([list(pieces.input_ids[s, :n])])
            with torch.inference_mode():
                hidden = reference.model(input_ids=ids, output_hidden_states=True).hidden_states
            assert len(hidden) == N_LAYERS + 1
            want = hidden[layer][0].numpy()
            got = states[s, :n]
            assert got.shape == want.shape
            assert abs(got - want).max() < 1e-4, (layer, s)
            compared += 1
    assert compared > len(TEXTS)  # strided windows: more spans than docs
