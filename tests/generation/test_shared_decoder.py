"""One fused decoder per loaded model: pipelines and engines on a shared model add no copies
of its weights, and the decoder goes away with the model."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Dict, Iterable

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.decoder import FastLlama
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import load_hf_folder

from ..fixtures.helpers import tiny_nlp
from ..fixtures.tiny import make_tiny_hf

TEXTS = ["London is a big city in the United Kingdom.", "The quick brown fox", "Cars"]


def decoder_tensors(fast: FastLlama) -> Iterable[Any]:
    for p in [*fast.qkv, *fast.o, *fast.gate_up, *fast.down, fast.lm_head]:
        yield p.weight
        yield p.packed
        if p.int8 is not None:
            yield from (p.int8.q, p.int8.scale)


def storage_bytes(model: Any, decoders: Iterable[FastLlama]) -> int:
    """Bytes of every distinct storage behind the model and the decoders, each counted once
    (oneDNN's packed weights are opaque: counted once per tensor object)."""
    seen: Dict[Any, int] = {}
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [t for fast in decoders for t in decoder_tensors(fast)]
    for t in tensors:
        if t is None:
            continue
        if t.is_mkldnn:
            seen[("mkldnn", id(t))] = t.numel() * t.element_size()
        else:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def test_pipelines_on_one_model_share_one_fused_decoder(tmp_path):
    folder = make_tiny_hf(tmp_path / "model", seed=3)  # a model no other test has loaded
    sizes, outputs, engines = [], [], []
    for _ in range(3):
        nlp = tiny_nlp(folder, generation={"max_new_tokens": 6})
        outputs.append([(d._.llama_completion, d._.llama_logprobs) for d in nlp.pipe(TEXTS)])
        engines.append(nlp.get_pipe("llama").engine)
        model = engines[-1].model.model
        sizes.append(storage_bytes(model, [e.fast for e in engines]))
    assert engines[0].model is engines[2].model  # the cached model, shared
    assert engines[0].fast is not None and engines[0].fast.prepacked  # packed copies count
    assert sizes[0] == sizes[1] == sizes[2], sizes
    assert outputs[0] == outputs[1] == outputs[2]


def test_decoders_of_one_model_share_its_fused_weights(tiny_hf):
    """A float and an int8 engine on one model: one fused copy of q/k/v and gate/up."""
    lm = load_hf_folder(tiny_hf, device="cpu", dtype="float32")
    plain = Engine(lm, GenerationConfig()).fast
    quant = Engine(lm, GenerationConfig(), quantize="int8").fast
    assert plain is not None and quant is not None and plain is not quant
    q_proj = lm.model.model.layers[0].self_attn.q_proj.weight
    pairs = [(plain.qkv[0].weight, quant.qkv[0].weight), (plain.qkv[0].weight, q_proj)]
    pairs += [(plain.gate_up[1].weight, quant.gate_up[1].weight)]
    assert all(same_storage(a, b) for a, b in pairs)


def same_storage(a: Any, b: Any) -> bool:
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def test_the_fused_decoder_goes_with_its_model(tiny_hf):
    lm = load_hf_folder(tiny_hf, device="cpu", dtype="float32")  # not the process-wide cache
    engine = Engine(lm, GenerationConfig(max_new_tokens=2))
    fast = engine.fast
    assert fast is not None and Engine(lm, GenerationConfig()).fast is fast
    refs = [weakref.ref(fast), weakref.ref(lm.model)]
    del lm, engine, fast
    gc.collect()
    assert [r() for r in refs] == [None, None]
