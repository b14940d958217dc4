"""generation/decoder.py: the fused decoder (FastLlama) gives transformers' own logits and
hidden states (prefill with and without a cached prefix, decode, verify, right padding);
int8 projections are opt-in, per row, and float32 only; one fused decoder per loaded model,
which adds no copies of its weights and goes with the model."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Dict, Iterable, List

import pytest
import spacy
import torch

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.decoder import FastLlama, Int8Weight
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import hf_model_v1, load_hf_folder

from ..fixtures.helpers import TEXTS, tiny_llama_config, tiny_nlp
from ..fixtures.tiny import make_tiny_hf

SHORT = [TEXTS[0], TEXTS[1], TEXTS[3]]  # London, the quick brown fox, Cars
ROWS = [[1, 40, 41, 42, 43, 44, 45, 46, 47], [1, 50, 51], [1, 60, 61, 62, 63, 64]]  # token ids


@pytest.fixture(scope="module")
def hf(tiny_hf) -> Any:
    """The tiny model's transformers LlamaForCausalLM (float32, eval mode)."""
    return hf_model_v1(path=str(tiny_hf), device="cpu", dtype="float32").model


def reference(hf: Any, ids: List[int]) -> torch.Tensor:
    """transformers' forward over one unpadded row: the logits of every position."""
    with torch.inference_mode():
        return hf(input_ids=torch.tensor([ids])).logits[0].float()


def padded(rows: List[List[int]]) -> torch.Tensor:
    ids = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids


@pytest.mark.parametrize("prepack", [False, None])  # plain weights, and this CPU's choice
def test_prefill_decode_and_verify_give_transformers_logits(hf, prepack) -> None:
    fast = FastLlama(hf, prepack=prepack)
    cache = fast.new_cache(len(ROWS), 32)
    lengths = torch.tensor([len(r) for r in ROWS])
    last = fast.prefill(padded(ROWS), lengths, cache, torch.arange(len(ROWS)), start=0)
    for i, row in enumerate(ROWS):  # right padding changes nothing
        assert torch.allclose(last[i].float(), reference(hf, row)[-1], atol=1e-4)
    # one decode step per slot, each from its own length
    step = [70, 71, 72]
    logits = fast.decode(torch.tensor(step), lengths, cache)
    for i, row in enumerate(ROWS):
        assert torch.allclose(logits[i].float(), reference(hf, row + [step[i]])[-1], atol=1e-4)
    # verify: several tokens per slot in one pass, every position's logits
    drafts = [[80, 81, 82], [83, 84, 85], [86, 87, 88]]
    out = fast.verify(padded(drafts), lengths + 1, cache)
    for i, row in enumerate(ROWS):
        want = reference(hf, row + [step[i]] + drafts[i])[-3:]
        assert torch.allclose(out[i].float(), want, atol=1e-4)


def test_prefill_after_a_cached_prefix_equals_the_whole_row(hf) -> None:
    """The shared prompt prefix computed once (``prefix``), the suffixes prefilled from it."""
    fast = FastLlama(hf)
    prefix = [1, 30, 31, 32, 33]
    suffixes = [[40, 41, 42], [50]]
    cache = fast.new_cache(2, 16)
    for slot in range(2):
        fast.prefix(prefix, cache, slot)
    lengths = torch.tensor([len(s) for s in suffixes])
    last = fast.prefill(padded(suffixes), lengths, cache, torch.tensor([0, 1]), start=len(prefix))
    for i, suffix in enumerate(suffixes):
        assert torch.allclose(last[i].float(), reference(hf, prefix + suffix)[-1], atol=1e-4)


def test_hidden_states_are_transformers_last_hidden_state(hf) -> None:
    fast = FastLlama(hf)
    states = fast.hidden_states(padded(ROWS), torch.tensor([len(r) for r in ROWS]))
    for i, row in enumerate(ROWS):
        with torch.inference_mode():
            want = hf.model(input_ids=torch.tensor([row])).last_hidden_state[0]
        assert torch.allclose(states[i, : len(row)], want, atol=1e-4)


def test_int8_quantization_is_an_opt_in_with_its_own_cache_key(tiny_hf):
    plain = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10})
    quant = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10}, quantize="int8")
    engine = quant.get_pipe("llama").engine
    a = [d._.llama_logprobs for d in plain.pipe(TEXTS)]
    b = [d._.llama_logprobs for d in quant.pipe(TEXTS)]
    fast = engine.fast
    assert fast is not None and all(p.int8 is not None for p in fast.qkv + fast.down)
    assert fast.lm_head.int8 is None  # reported log-probabilities come from float logits
    # int8 changes the numbers a little, not the picture
    assert a != b
    first_a, first_b = [x[0] for x in a if x], [x[0] for x in b if x]
    assert first_a == pytest.approx(first_b, abs=0.5)
    ids = [1, 2, 3]
    assert engine.cache_key(ids) != plain.get_pipe("llama").engine.cache_key(ids)

def test_int8_scales_each_row_on_its_own():
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    x = torch.randn(2, 48)
    x[1] *= 1000.0  # one token with huge activations in the same batch
    got, want = Int8Weight(weight)(x), x @ weight.T
    # a per-tensor scale would round the small row to a handful of int8 levels
    assert ((got[0] - want[0]).norm() / want[0].norm()).item() < 0.02
    assert ((got[1] - want[1]).norm() / want[1].norm()).item() < 0.02
    half = Int8Weight(weight)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert ((half[0].float() - want[0]).norm() / want[0].norm()).item() < 0.03
    # a bf16 row whose largest value would round to 128 (and wrap to -128) in bf16 arithmetic
    row = torch.tensor([[0.7, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    assert Int8Weight(torch.eye(4))(row)[0, 0].item() == pytest.approx(0.7, abs=0.01)

def test_int8_needs_float32_weights(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, quantize="int8")
    cfg["model"]["dtype"] = "bfloat16"
    with pytest.raises(ValueError, match="float32"):
        spacy.blank("en").add_pipe("llama", config=cfg)


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
        outputs.append([(d._.llama_completion, d._.llama_logprobs) for d in nlp.pipe(SHORT)])
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
