"""A pipeline with the listener features on the tiny random model, written as a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import spacy
from spacy.training import Example
from thinc.api import Config

import spacy_llama.features.model  # noqa: F401  (registers the architecture)

TEXTS = [
    "Apple is looking at buying a U.K. startup for $1 billion.",
    "London is a big city.",
    "The quick brown fox jumps over the lazy dog: é ü 😀 naïve café.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
]

CONFIG = """
[nlp]
lang = "en"
pipeline = ["transformer","textcat"]

[components]

[components.transformer]
factory = "transformer"
max_batch_items = 4096

[components.transformer.model]
@architectures = "spacy-llama.TransformerModel.v1"
layer = -1
freeze = true
batch_tokens = 4096

[components.transformer.model.model]
@llama_models = "spacy-llama.HF.v1"
path = null
device = "cpu"
dtype = "float32"

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 8
stride = 6

[components.textcat]
factory = "textcat"

[components.textcat.model]
@architectures = "spacy.TextCatReduce.v1"
exclusive_classes = true
use_reduce_first = false
use_reduce_last = false
use_reduce_max = false
use_reduce_mean = true
nO = null

[components.textcat.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[components.textcat.model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""


def listener_config(path: Path, overrides: Optional[Dict[str, Any]] = None) -> Config:
    config = Config().from_str(CONFIG)
    config["components"]["transformer"]["model"]["model"]["path"] = str(path)
    for dotted, value in (overrides or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def examples(nlp: Any) -> List[Example]:
    return [
        Example.from_dict(nlp.make_doc(t), {"cats": {"A": float(i % 2), "B": float(1 - i % 2)}})
        for i, t in enumerate(TEXTS)
    ]


def listener_nlp(path: Path, overrides: Optional[Dict[str, Any]] = None) -> Any:
    return spacy.util.load_model_from_config(listener_config(path, overrides), auto_fill=True)


LORA = {"@llama_adapters": "spacy-llama.LoRA.v1", "r": 4, "alpha": 8}


def lora_overrides(layer: Any = -1, **settings: Any) -> Dict[str, Any]:
    """freeze = false with a small LoRA adapter block (and the given layer)."""
    return {
        "components.transformer.model.freeze": False,
        "components.transformer.model.adapter": {**LORA, **settings},
        "components.transformer.model.layer": layer,
    }


def train_steps(nlp: Any, egs: List[Example], optimizer: Any, steps: int) -> List[Dict[str, float]]:
    """``steps`` updates as ``spacy train`` makes them: every component's update, then one
    finish_update each. Returns each step's losses."""
    history = []
    for _ in range(steps):
        losses: Dict[str, float] = {}
        nlp.update(egs, sgd=False, losses=losses)
        for _, proc in nlp.pipeline:
            if getattr(proc, "is_trainable", False):
                proc.finish_update(optimizer)
        history.append(losses)
    return history
