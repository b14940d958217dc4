"""Which transformers architectures the fused decoder runs, read from a folder's config.json
before anything is loaded.

``generation/decoder.py`` runs LLaMA's layer layout only (``model_type = "llama"``, no
attention or MLP biases). Any other causal LM that transformers can load still runs, on the
portable decode loop (``generation/transformers_loop.py``): slower, and the shipped prompts
and chat handling were written for LLaMA-family instruct models, so a base LM such as GPT-2
answers them poorly. HF.v1 says so by name (W830) instead of loading it silently.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

FUSED_MODEL_TYPES = ("llama",)


def architecture_name(config: Dict[str, Any]) -> str:
    """``"gpt2 (GPT2LMHeadModel)"``: the model type and the classes config.json names."""
    model_type = str(config.get("model_type") or "unknown")
    classes: List[str] = [str(c) for c in config.get("architectures") or []]
    return f"{model_type} ({', '.join(classes)})" if classes else model_type


def fused_decoder_blocker(config: Dict[str, Any]) -> Optional[str]:
    """Why the fused decoder cannot run the model of this config.json, or None if it can.
    The same conditions as ``generation.decoder.supports_fast_decoder`` checks on a loaded
    model, read from the file."""
    model_type = config.get("model_type")
    if model_type not in FUSED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {list(FUSED_MODEL_TYPES)}"
    if config.get("attention_bias"):
        return "its attention projections have biases (attention_bias = true)"
    if config.get("mlp_bias"):
        return "its MLP projections have biases (mlp_bias = true)"
    return None
