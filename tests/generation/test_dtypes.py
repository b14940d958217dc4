"""bfloat16 and float16 on CPU: greedy outputs against transformers' own ``generate`` at the
same dtype, through the component (fused decoder, prefix cache and prompt lookup on); bf16
on a CPU where oneDNN has no bf16 path (AVX2 only); what ``cpu_features`` answers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest
import spacy
import torch
from transformers import AutoModelForCausalLM

from spacy_llama.generation.continuous import MIN_SHARED_PREFIX, shared_prefix_len
from spacy_llama.generation.scoring import Scorer
from spacy_llama.models import cpu_features as cpu
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.models.placement import place, resolve_dtype
from spacy_llama.types import ScoreRequest, TokenLogprobRequest

from ..fixtures.helpers import tiny_llama_config

# Repetitive texts (prompt lookup drafts from them) and plain ones; one shared instruction.
TEXTS = [
    "one two three four one two three four one two three four",
    "red green blue red green blue red green",
    "The cat sat. The cat sat. The cat",
    "a b c d e f g a b c d e f g a b c",
    "London is a big city in the United Kingdom.",
    "Marie Curie won the Nobel Prize.",
    "Apple is looking at buying a U.K. startup for $1 billion.",
    "San Francisco considers banning sidewalk delivery robots.",
    "x y",
    "The quick brown fox jumps over the lazy dog.",
]
TEMPLATE = "Repeat after me, word for word, please: {{ text }}"
NEW_TOKENS = 24
REDUCED = pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
ROOT = Path(__file__).resolve().parents[2]

Reference = Tuple[List[int], List[torch.Tensor]]  # greedy tokens, the logits of each step


def hf_reference(folder, dtype: str, prompts: Sequence[List[int]]) -> List[Reference]:
    """transformers' own greedy ``generate``, one document at a time, at ``dtype``."""
    model = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=getattr(torch, dtype))
    out = []
    for ids in prompts:
        gen = model.eval().generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=2,
            output_logits=True,
            return_dict_in_generate=True,
        )
        out.append((gen.sequences[0, len(ids) :].tolist(), [s[0].float() for s in gen.logits]))
    return out


def dtype_nlp(folder, dtype: str, batch_size: int):
    cfg = tiny_llama_config(
        folder, template=TEMPLATE, generation={"max_new_tokens": NEW_TOKENS}, batch_size=batch_size
    )
    cfg["model"]["dtype"] = dtype
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=cfg)
    nlp.get_pipe("llama").engine._stop_ids = []  # no EOS: max_new_tokens decides, as in HF
    return nlp


def ulp(value: float, dtype: str) -> float:
    """The spacing of ``dtype`` numbers at ``value`` (bf16: 1/32 between 4 and 8)."""
    return torch.finfo(getattr(torch, dtype)).eps * 2.0 ** math.floor(math.log2(abs(value)))


def assert_same_greedy(tokens, logprobs, ref: Reference, dtype: str) -> int:
    """Our tokens are transformers' up to the first step where transformers' own top logits
    are within one ulp of each other, and there ours is one of them. Returns the tokens
    compared before a split.

    Why a tie can split: a row's attention sums over a block of keys, and the prefix cache
    (prefix queries see only the prefix's keys), verify passes (later queries' keys, masked)
    and batching (the widest row's keys, masked) change how many masked keys the CPU SDPA
    kernel sums over, and with it the order of its float32 sums. The outputs then differ by
    ~1e-7 relative; float32 keeps that, bf16/fp16 round it to a one-ulp difference now and
    then. The logits themselves are bf16/fp16 (bf16: 8 significant bits), so two candidates
    often tie exactly or sit one ulp apart, and there a one-ulp push picks the other one.
    transformers' own batched generate differs from its one-doc-at-a-time generate by as much
    (max |logit difference| 0.055 in bf16, 0.011 in fp16 on this tiny model, 10 docs).
    """
    want, steps = ref
    for j, (got, expected) in enumerate(zip(tokens, want)):
        logits = steps[j]
        tol = ulp(float(logits.max()), dtype)
        if got != expected:
            gap = float(logits[expected] - logits[got])
            assert gap <= tol, f"step {j}: {got} instead of {expected}, {gap} below the top"
            return j
        want_lp = float(torch.log_softmax(logits, -1)[expected])
        assert logprobs[j] == pytest.approx(want_lp, abs=2 * tol), f"step {j}"
    assert len(tokens) == len(want) == NEW_TOKENS
    return len(want)


@REDUCED
def test_loading_keeps_the_rotary_frequencies_in_float32(tiny_hf, dtype):
    """As transformers' from_pretrained(torch_dtype=...): cast to bf16, inv_freq keeps three
    digits and the rotary angles drift with the position."""
    ours = hf_model_v1(path=str(tiny_hf), device="cpu", dtype=dtype).model
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_hf), torch_dtype=getattr(torch, dtype))
    assert next(ours.parameters()).dtype == getattr(torch, dtype)
    mine, theirs = ours.model.rotary_emb.inv_freq, hf.model.rotary_emb.inv_freq
    assert mine.dtype == theirs.dtype == torch.float32
    assert torch.equal(mine, theirs)


@REDUCED
@pytest.mark.parametrize("batch_size", [1, 4])
def test_reduced_precision_greedy_equals_transformers_generate(tiny_hf, dtype, batch_size):
    nlp = dtype_nlp(tiny_hf, dtype, batch_size)
    pipe = nlp.get_pipe("llama")
    requests = pipe.task.requests([nlp.make_doc(t) for t in TEXTS])
    prompts = [pipe.model.encode(r.prompt) for r in requests]
    results = pipe.engine.run(requests)
    engine = pipe.engine
    assert engine.fast is not None and engine.fast.dtype == getattr(torch, dtype)
    # the path this CPU runs: oneDNN-prepacked bf16 where it has a bf16 path; fp16 plain
    assert engine.fast.prepacked == (dtype == "bfloat16" and cpu.cpu_features().onednn_bf16)
    assert engine.prefix_cache and shared_prefix_len(prompts) >= MIN_SHARED_PREFIX
    assert engine.draft_stats.checked > 0  # prompt lookup drafted and verified
    compared = [
        assert_same_greedy(r.token_ids, r.logprobs, ref, dtype)
        for r, ref in zip(results, hf_reference(tiny_hf, dtype, prompts))
    ]
    # splits at ties are rare (and a test where every document split would show nothing):
    # most documents match transformers token for token
    assert sum(n == NEW_TOKENS for n in compared) >= len(TEXTS) - 2, compared


# -- bf16 where oneDNN has no bf16 path (the avx2_cpu fixture: conftest.py) ----------------
def check_bf16_on_plain_weights(folder) -> None:
    """A bf16 pipeline on a CPU without oneDNN bf16: built without prepacking, it generates
    transformers' greedy tokens and scores as transformers' forward pass does."""
    assert not cpu.cpu_features().onednn_bf16
    nlp = dtype_nlp(folder, "bfloat16", batch_size=4)
    pipe = nlp.get_pipe("llama")
    engine = pipe.engine
    requests = pipe.task.requests([nlp.make_doc(t) for t in TEXTS[:6]])
    prompts = [pipe.model.encode(r.prompt) for r in requests]
    results = engine.run(requests)  # used to raise here: "bf16 path needs the cpu support ..."
    assert engine.prepack is False  # decided when the pipeline was built
    fast = engine.fast
    assert fast is not None and not fast.prepacked
    assert all(p.packed is None for p in [*fast.qkv, *fast.o, *fast.gate_up, *fast.down])
    assert fast.lm_head.packed is None
    refs = hf_reference(folder, "bfloat16", prompts)
    for r, ref in zip(results, refs):
        assert_same_greedy(r.token_ids, r.logprobs, ref, "bfloat16")
    score = ScoreRequest(prompt="London is a big city in the", candidates=[" United", " dog"])
    text = TokenLogprobRequest("Marie Curie won the Nobel Prize in Physics.")
    fused_score, fused_lps = engine.run_all([score, text])
    plain = Scorer(pipe.model, batch_size=4)  # transformers' forward pass
    assert fused_score.sums == pytest.approx(plain.score([score])[0].sums, abs=0.1)
    want = plain.token_logprobs([text])[0].logprobs
    assert fused_lps.logprobs[1:] == pytest.approx(want[1:], abs=0.1)


def test_bf16_without_onednn_bf16_runs_plain_weights(tiny_hf, avx2_cpu):
    check_bf16_on_plain_weights(tiny_hf)


CHILD = """
import sys
from tests.generation.test_dtypes import check_bf16_on_plain_weights
check_bf16_on_plain_weights(sys.argv[1])
"""


def test_bf16_where_onednn_itself_refuses_bf16(tiny_hf):
    """No simulation in this process: oneDNN capped at AVX2 raises for bf16 prepacking just
    as on an AVX2-only CPU, and torch's own check (which cpu_features asks) says so."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    env["PYTHONPATH"] = str(ROOT)
    env.pop(cpu.ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_hf)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cpu_features_of_an_avx2_only_cpu(avx2_cpu):
    features = cpu.cpu_features()
    assert not features.onednn_bf16 and not features.onednn_fp16 and not features.int8_vnni
    assert not features.fast_matmul(torch.bfloat16) and features.fast_matmul(torch.float32)
    assert "AVX-512" in features.why_slow(torch.bfloat16)
    # auto never picks what the CPU runs on reference kernels
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.warns(UserWarning, match="reference kernels"):
        place(torch.nn.Linear(4, 4), torch.device("cpu"), torch.bfloat16)


def test_cpu_features_override_only_takes_away(monkeypatch):
    real = cpu.cpu_features()
    assert cpu.cpu_features() is real  # cached
    cases = [("avx512f,avx512bw,avx512vl,avx512dq", True), ("avx_ne_convert", True)]
    for flags, bf16 in [*cases, ("avx,avx2,fma", False)]:
        monkeypatch.setenv(cpu.ENV, flags + ",avx512_vnni")
        cpu.cpu_features.cache_clear()
        features = cpu.cpu_features()
        assert features.onednn_bf16 == (bf16 and real.onednn_bf16)  # never more than torch's
        assert features.int8_vnni
    monkeypatch.setenv(cpu.ENV, "")  # empty: not set
    cpu.cpu_features.cache_clear()
    assert cpu.cpu_features() == real
    cpu.cpu_features.cache_clear()
