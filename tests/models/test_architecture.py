"""HF.v1 names an architecture the fused LLaMA decoder cannot run (W830) instead of loading
it silently, and still runs it on the portable decode loop."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from spacy_llama.generation.decoder import supports_fast_decoder
from spacy_llama.models.architecture import architecture_name, fused_decoder_blocker
from spacy_llama.models.hf import hf_model_v1

from ..fixtures.tiny import make_tiny_hf, make_tokenizer


def make_tiny_gpt2(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=2,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def test_gpt2_folder_is_named_in_a_warning(tmp_path):
    folder = make_tiny_gpt2(tmp_path / "gpt2")
    with pytest.warns(UserWarning, match=r"W830") as record:
        model = hf_model_v1(folder, device="cpu")
    message = str(record[0].message)
    assert "gpt2 (GPT2LMHeadModel)" in message and str(folder) in message
    assert "SmolLM2.v1" in message  # the fix
    # it still loads and runs, on the portable loop (not the fused decoder)
    assert not supports_fast_decoder(model.model)
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine
    from spacy_llama.types import GenerationRequest

    engine = Engine(model, GenerationConfig(max_new_tokens=3, temperature=0.0))
    (out,) = engine.run([GenerationRequest("Apple is")])
    assert out.error is None and len(out.token_ids) >= 1


def test_llama_folder_loads_without_the_warning(tiny_hf):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*W830")
        hf_model_v1(tiny_hf, device="cpu")


def test_llama_with_biases_is_named(tmp_path):
    folder = make_tiny_hf(tmp_path / "biased", config={"attention_bias": True})
    with pytest.warns(UserWarning, match=r"W830.*attention_bias"):
        model = hf_model_v1(folder, device="cpu")
    assert not supports_fast_decoder(model.model)  # the file check agrees with the decoder's


@pytest.mark.parametrize(
    "config,blocked",
    [
        ({"model_type": "llama"}, False),
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, True),
        ({"model_type": "llama", "mlp_bias": True}, True),
        ({}, True),
    ],
)
def test_fused_decoder_blocker(config, blocked):
    assert (fused_decoder_blocker(config) is not None) is blocked


def test_architecture_name():
    assert architecture_name({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}) == (
        "gpt2 (GPT2LMHeadModel)"
    )
    assert architecture_name({}) == "unknown"
