"""Bad settings and docs the features cannot serve: coded errors naming the fix."""

from __future__ import annotations

import pytest
from spacy.util import registry

from spacy_llama.errors import FeatureError, TrainingError

from ..fixtures.fake_server import FakeServer
from .builders import examples, listener_nlp, lora_overrides


def test_a_server_model_block_is_a_config_error(tiny_hf) -> None:
    with FakeServer() as fake:
        block = {"@llama_models": "spacy-llama.OpenAICompatible.v1", "base_url": fake.url,
                 "context_length": 2048}  # fmt: skip
        with pytest.raises(FeatureError, match=r"\[E550\].*spacy-llama.SmolLM2.v1"):
            listener_nlp(tiny_hf, {"components.transformer.model.model": block})


@pytest.mark.parametrize("layer", [3, -4, "last"])
def test_a_layer_out_of_range_names_the_range(tiny_hf, layer) -> None:
    # the tiny model: 2 layers, 3 hidden states
    with pytest.raises(FeatureError, match=r"\[E551\].*\[-3, 2\]"):
        listener_nlp(tiny_hf, {"components.transformer.model.layer": layer})


def test_freeze_false_without_an_adapter_block_names_the_block(tiny_hf) -> None:
    with pytest.raises(FeatureError, match=r"\[E555\].*no adapter block.*spacy-llama.LoRA.v1"):
        listener_nlp(tiny_hf, {"components.transformer.model.freeze": False})


def test_an_adapter_block_with_freeze_true_is_refused(tiny_hf) -> None:
    overrides = {**lora_overrides(), "components.transformer.model.freeze": True}
    with pytest.raises(FeatureError, match=r"\[E557\].*freeze = false"):
        listener_nlp(tiny_hf, overrides)


def test_bad_adapter_settings_name_the_features_block(tiny_hf) -> None:
    match = r"\[E500\].*components.transformer.model.adapter.*r = 0"
    with pytest.raises(TrainingError, match=match):
        listener_nlp(tiny_hf, lora_overrides(r=0))


def test_a_doc_longer_than_the_context_names_the_doc_and_the_setting(tiny_hf) -> None:
    doc_spans = {"@span_getters": "spacy-transformers.doc_spans.v1"}
    nlp = listener_nlp(tiny_hf, {"components.transformer.model.get_spans": doc_spans})
    nlp.initialize(lambda: examples(nlp))
    text = "Supercalifragilistic words " * 80  # > 256 pieces: the tiny model's context
    with pytest.raises(FeatureError, match=r"\[E552\] Doc 'Supercali.*strided_spans.v1"):
        nlp(text)
    nlp(text[:200])  # a short one is fine


def test_a_span_getter_that_skips_tokens_is_an_error(tiny_hf) -> None:
    name = "test.first_half_spans.v1"
    if name not in registry.span_getters:

        @registry.span_getters(name)
        def first_half():
            return lambda docs: [[doc[: len(doc) // 2]] for doc in docs]

    nlp = listener_nlp(tiny_hf, {"components.transformer.model.get_spans": {"@span_getters": name}})
    nlp.initialize(lambda: examples(nlp))
    with pytest.raises(FeatureError, match=r"\[E553\].*'jumps', token 4"):
        nlp("The quick brown fox jumps over the lazy dog")
