"""A saved pipeline holds no base weights (spacy.load rebuilds the model from the config's
model block), and a pipeline with the ``transformer`` and the ``llama`` component on the
same weights holds one copy of them."""

from __future__ import annotations

import numpy
import spacy

from .builders import TEXTS, examples, listener_nlp


def _trained(tiny_hf):
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.layer": "mix"})
    egs = examples(nlp)
    optimizer = nlp.initialize(lambda: egs)
    for _ in range(4):
        nlp.update(egs, sgd=optimizer)
    return nlp


def test_to_disk_writes_no_weights_and_spacy_load_rebuilds(tiny_hf, tmp_path) -> None:
    nlp = _trained(tiny_hf)
    nlp.to_disk(tmp_path / "pipe")
    folder = tmp_path / "pipe" / "transformer"
    files = {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    weights = sum(p.stat().st_size for p in tiny_hf.glob("*.safetensors"))
    assert set(files) == {"cfg", "model"}
    assert sum(files.values()) < 2000 < weights  # the mix's 4 floats, not the model
    loaded = spacy.load(tmp_path / "pipe")
    mix = loaded.get_pipe("transformer").model.get_param("mix_weights")
    assert numpy.array_equal(mix, nlp.get_pipe("transformer").model.get_param("mix_weights"))
    assert not numpy.array_equal(mix, numpy.zeros_like(mix))  # the trained mix came back
    assert loaded(TEXTS[0]).cats == nlp(TEXTS[0]).cats


def test_the_llama_component_and_the_features_share_one_model(tiny_hf) -> None:
    nlp = listener_nlp(tiny_hf)
    block = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu",
             "dtype": "float32"}  # fmt: skip
    nlp.add_pipe("llama", config={"model": block})
    features = nlp.get_pipe("transformer").model.llama
    llama = nlp.get_pipe("llama").model
    assert llama is features
    assert id(llama.model) == id(features.model)
    ptrs = {p.data_ptr() for p in llama.model.parameters()}
    assert ptrs == {p.data_ptr() for p in features.model.parameters()}
