"""Real model sizes: memory and speed of GGUF.v2 against llama.cpp on the same files (issue 25).

Builds its models locally from random weights (no download), once, in ``--work``:
  - a SmolLM2-1.7B-shaped model (hidden 2048, 24 layers, 32 heads, 32 kv heads, intermediate
    8192, vocabulary 49152, tied embeddings) with SmolLM2-135M's tokenizer, as GGUF Q8_0, Q4_0
    and Q4_K, and as an HF folder (bf16 safetensors) for the float32 baseline;
  - a Llama-3.1-8B-shaped Q4_K GGUF (hidden 4096, 32 layers, 32 heads, 8 kv heads,
    intermediate 14336, vocabulary 128256: the token list padded with dummy tokens; untied
    output in Q6_K), for the memory row alone.
GGUF files are written one tensor at a time; quantized tensors are random raw blocks of
their type (random 4/8-bit codes under small f16 scales, so weights look like N(0, 0.02)):
quantizing float arrays with gguf-py would take hours at 8B, and gguf-py cannot write k-quants.

Then, each configuration in its own child process, one after another: peak RSS while
loading, RSS while generating, generated tok/s at batch 1, 16 and 32 (greedy, 32 new tokens,
2 threads) for GGUF.v2 and llama.cpp on each file, the float32 path (HF.v1) at batch 16, the
8B file under a 16 GiB budget, and the memory bandwidth reached at batch 1 next to this
machine's measured bandwidth. Quality on the real SmolLM2-135M (Q4_1): perplexity on corpus/
text with GGUF.v2 and with llama.cpp on the same file, greedy agreement with the float model.
Prints a table and writes every number and the ratios against the issue's targets as JSON.

    python benchmarks/scale.py [--work /tmp/spacy_llama_scale] [--json scale.json]
                               [--skip 8b,fp32,quality] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 1 << 30
RESULT = "RESULT "  # the child's last line: RESULT {json}
BUILD_VERSION = 1  # bump when the built files change: they are rebuilt


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    tied: bool
    rope_theta: float
    context: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SMOLLM2_1_7B = Shape("smollm2-1.7b", 2048, 24, 32, 32, 8192, 49152, True, 130000.0, 8192)
LLAMA3_8B = Shape("llama3.1-8b", 4096, 32, 32, 8, 14336, 128256, False, 500000.0, 8192)
# --quick: the same code at a tiny shape (rows of 256 for the k-quants; SmolLM2's vocabulary)
TINY = Shape("tiny", 256, 2, 4, 4, 512, 49152, True, 130000.0, 2048)
TINY_UNTIED = Shape("tiny-untied", 256, 2, 4, 2, 768, 49152 + 64, False, 500000.0, 2048)

# What each file keeps where: projections, token embedding, untied output head.
SCHEMES: Dict[str, Dict[str, str]] = {
    "Q8_0": {"proj": "Q8_0", "embd": "Q8_0", "output": "Q8_0", "file_type": "7"},
    "Q4_0": {"proj": "Q4_0", "embd": "Q8_0", "output": "Q8_0", "file_type": "2"},
    # a Q4_K_M-like mix: 4-bit k-quant projections, the output head (the tied embedding for
    # SmolLM2) in Q6_K as llama.cpp's quantize keeps it
    "Q4_K": {"proj": "Q4_K", "embd": "Q6_K", "output": "Q6_K", "file_type": "15"},
}
SCHEME_8B = {"proj": "Q4_K", "embd": "Q4_K", "output": "Q6_K", "file_type": "15"}

# the targets
LOAD_BOUND = (1.3, 1.0 * GiB)  # peak RSS while loading <= 1.3 x file + 1 GiB
GEN_FACTOR = 1.2  # RSS while generating <= 1.2 x file + the KV cache
B1_VS_LLAMA_CPP = 0.9
BATCHED_VS_LLAMA_CPP = 1.5
BANDWIDTH_SHARE = 0.6
BUDGET_8B = 16 * GiB


# --------------------------------------------------------------------------- building


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(qtype_name: str, n_weights: int, rng: np.random.Generator) -> np.ndarray:
    """Raw blocks of a quantized type: random codes, per-block f16 scales chosen so the
    de-quantised weights have a standard deviation of ~0.02 and a mean of ~0."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType[qtype_name]
    block, size = GGML_QUANT_SIZES[qtype]
    nb = n_weights // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
    jitter = rng.uniform(0.8, 1.2, nb)
    std = 0.02
    if qtype_name == "Q8_0":  # d, 32 x int8: w = d q; uniform int8 has std 73.9
        raw[:, 0:2] = _f16_bytes(std / 73.9 * jitter)
    elif qtype_name == "Q4_0":  # d, 16 bytes of nibbles: w = d (q - 8); std of q 4.61
        raw[:, 0:2] = _f16_bytes(std / 4.61 * jitter)
    elif qtype_name == "Q4_K":
        # d, dmin, 12 bytes of 6-bit (scale, min) for 8 sub-blocks, 128 bytes of nibbles:
        # w = d sc q - dmin m. With dmin = d and m = 7.5 sc, w = d sc (q - 7.5): mean 0.
        sc = rng.choice(np.array([2, 4, 6, 8], dtype=np.uint8), size=(nb, 8))
        m = (sc.astype(np.uint16) * 15 // 2).astype(np.uint8)
        d = std / (5.48 * 4.61) * jitter  # 5.48: the rms of sc
        raw[:, 0:2] = _f16_bytes(d)
        raw[:, 2:4] = _f16_bytes(d)
        scales = np.empty((nb, 12), dtype=np.uint8)
        scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
        scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
        scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
        raw[:, 4:16] = scales
    elif qtype_name == "Q6_K":
        # ql[128], qh[64], 16 int8 scales, d: w = d sc (q - 32); std of q 18.5
        sc = rng.integers(8, 17, size=(nb, 16), dtype=np.int8)
        raw[:, 192:208] = sc.view(np.uint8)
        raw[:, 208:210] = _f16_bytes(std / (12.3 * 18.5) * jitter)
    else:  # pragma: no cover - only the types above are built
        raise ValueError(qtype_name)
    return raw


@functools.lru_cache(maxsize=4)
def _tokenizer_fields(vocab: int) -> List[tuple]:
    """SmolLM2-135M's ``tokenizer.*`` fields, the token list padded to ``vocab``."""
    from gguf import GGUFReader, GGUFValueType

    from spacy_llama.models.default import smollm2_gguf_path

    reader = GGUFReader(str(smollm2_gguf_path()))
    out = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == GGUFValueType.STRING:
                values: Any = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            if key == "tokenizer.ggml.tokens":
                values += [f"<dummy_{i:06d}>" for i in range(len(values), vocab)]
            elif key == "tokenizer.ggml.token_type":
                values += [1] * (vocab - len(values))  # NORMAL
            out.append((key, values, kind, sub))
        elif kind == GGUFValueType.STRING:
            out.append((key, bytes(field.parts[field.data[0]]).decode("utf-8"), kind, None))
        else:
            out.append((key, field.parts[field.data[0]].tolist()[0], kind, None))
    return out


def _gguf_tensors(shape: Shape, scheme: Dict[str, str]) -> List[tuple]:
    """(name, rows, cols, type) in the order llama.cpp's converter writes them."""
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim
    out = [("token_embd.weight", shape.vocab, h, scheme["embd"])]
    for i in range(shape.layers):
        p = scheme["proj"]
        out += [
            (f"blk.{i}.attn_norm.weight", 1, h, "F32"),
            (f"blk.{i}.ffn_down.weight", h, shape.ffn, p),
            (f"blk.{i}.ffn_gate.weight", shape.ffn, h, p),
            (f"blk.{i}.ffn_up.weight", shape.ffn, h, p),
            (f"blk.{i}.ffn_norm.weight", 1, h, "F32"),
            (f"blk.{i}.attn_k.weight", kv, h, p),
            (f"blk.{i}.attn_output.weight", h, h, p),
            (f"blk.{i}.attn_q.weight", h, h, p),
            (f"blk.{i}.attn_v.weight", kv, h, p),
        ]
    out.append(("output_norm.weight", 1, h, "F32"))
    if not shape.tied:
        out.append(("output.weight", shape.vocab, h, scheme["output"]))
    return out


def write_gguf(path: Path, shape: Shape, scheme: Dict[str, str], seed: int = 0) -> None:
    """A LLaMA GGUF of random weights, written one tensor at a time."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

    tmp = path.with_suffix(".partial")
    writer = GGUFWriter(str(tmp), "llama")
    writer.add_name(f"{shape.name} random")
    writer.add_uint32("llama.block_count", shape.layers)
    writer.add_uint32("llama.context_length", shape.context)
    writer.add_uint32("llama.embedding_length", shape.hidden)
    writer.add_uint32("llama.feed_forward_length", shape.ffn)
    writer.add_uint32("llama.attention.head_count", shape.heads)
    writer.add_uint32("llama.attention.head_count_kv", shape.kv_heads)
    writer.add_float32("llama.rope.freq_base", shape.rope_theta)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32("llama.vocab_size", shape.vocab)
    writer.add_uint32("llama.rope.dimension_count", shape.head_dim)
    writer.add_uint32("general.file_type", int(scheme["file_type"]))
    writer.add_uint32("general.quantization_version", 2)
    for key, value, kind, sub in _tokenizer_fields(shape.vocab):
        writer.add_key_value(key, value, kind, sub_type=sub)
    tensors = _gguf_tensors(shape, scheme)
    for name, rows, cols, kind in tensors:
        if kind == "F32":
            writer.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
        else:
            qtype = GGMLQuantizationType[kind]
            block, size = GGML_QUANT_SIZES[qtype]
            row_bytes = cols // block * size
            writer.add_tensor_info(
                name, (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes, raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for _name, rows, cols, kind in tensors:
        if kind == "F32":
            writer.write_tensor_data(np.ones(cols, dtype=np.float32))
        else:
            writer.write_tensor_data(random_blocks(kind, rows * cols, rng).reshape(rows, -1))
    writer.close()
    tmp.rename(path)


def write_hf(folder: Path, shape: Shape, seed: int = 0) -> None:
    """The same shape as an HF folder: bf16 safetensors, one shard per layer, SmolLM2's
    tokenizer (independent random weights: a speed and memory baseline)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    from spacy_llama.models.default import smollm2_gguf_path

    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(tmp))
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.context,
        rope_theta=shape.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=shape.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="bfloat16",
    )
    config.save_pretrained(str(tmp))
    gen = torch.Generator().manual_seed(seed)
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim

    def rand(*size: int) -> torch.Tensor:
        return (torch.randn(size, generator=gen) * 0.02).to(torch.bfloat16)

    shards: List[Dict[str, torch.Tensor]] = []
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        shards.append(
            {
                p + "self_attn.q_proj.weight": rand(h, h),
                p + "self_attn.k_proj.weight": rand(kv, h),
                p + "self_attn.v_proj.weight": rand(kv, h),
                p + "self_attn.o_proj.weight": rand(h, h),
                p + "mlp.gate_proj.weight": rand(shape.ffn, h),
                p + "mlp.up_proj.weight": rand(shape.ffn, h),
                p + "mlp.down_proj.weight": rand(h, shape.ffn),
                p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            }
        )
    shards.append({"model.embed_tokens.weight": None, "model.norm.weight": None})  # type: ignore[dict-item]
    if not shape.tied:
        shards.append({"lm_head.weight": None})  # type: ignore[dict-item]
    weight_map: Dict[str, str] = {}
    total = 0
    for n, shard in enumerate(shards, 1):
        for key in shard:  # the big tensors are drawn when their shard is written
            if shard[key] is None:
                shard[key] = (
                    torch.ones(h, dtype=torch.bfloat16) if "norm" in key else rand(shape.vocab, h)
                )
        name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(tmp / name), metadata={"format": "pt"})
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
        shard.clear()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    tmp.rename(folder)


def build(work: Path, quick: bool, skip: set) -> Dict[str, Any]:
    """Every model file, built once (a ``.done`` stamp records a finished build)."""
    work.mkdir(parents=True, exist_ok=True)
    small, big = (TINY, TINY_UNTIED) if quick else (SMOLLM2_1_7B, LLAMA3_8B)
    jobs: List[tuple] = [
        (f"{small.name}-{kind}.gguf", lambda p, k=kind: write_gguf(p, small, SCHEMES[k]))
        for kind in SCHEMES
    ]
    if "fp32" not in skip:
        jobs.append((f"{small.name}-hf", lambda p: write_hf(p, small)))
    if "8b" not in skip:
        jobs.append((f"{big.name}-Q4_K.gguf", lambda p: write_gguf(p, big, SCHEME_8B)))
    files: Dict[str, Any] = {}
    for name, make in jobs:
        path = work / name
        stamp = work / f"{name}.done"
        if not (path.exists() and stamp.exists() and stamp.read_text() == str(BUILD_VERSION)):
            t = time.perf_counter()
            print(f"building {path} ...", flush=True)
            make(path)
            stamp.write_text(str(BUILD_VERSION))
            print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
        files[name] = {"path": str(path), "bytes": _size(path)}
    return {"small": asdict(small), "big": asdict(big), "files": files}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return path.stat().st_size


# --------------------------------------------------------------------------- children


def _status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM (Linux: writing 5 to clear_refs), so the next peak is this phase's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    """Peak VmRSS sampled from /proc, where VmHWM cannot be reset."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("VmRSS"))
            time.sleep(0.005)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("VmRSS"))


def _phase_peak_kb(fn: Any) -> tuple:
    """(result, seconds, peak RSS kB during fn)."""
    exact = _reset_peak()
    with _Sampler() as s:
        t = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t
    return out, secs, _status_kb("VmHWM") if exact else s.peak


def _texts(n: int) -> List[str]:
    rows = [json.loads(line)["text"] for line in open(ROOT / "corpus" / "sample.jsonl")]
    return [rows[i % len(rows)] for i in range(n)]


def _imports() -> None:
    import spacy  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import spacy_llama  # noqa: F401


def _pipeline(model_cfg: Dict[str, Any], new_tokens: int, batch: int) -> Any:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": model_cfg,
            "task": {
                "@llama_tasks": "spacy-llama.Completion.v1",
                "template": "{{ text }}",
                "chat": False,
            },
            "generation": {"max_new_tokens": new_tokens},
            "batch_size": batch,
            # llama.cpp has no prompt lookup; random weights repeat themselves, so drafts
            # would be kept far more often than on a real model
            "prompt_lookup": False,
        },
    )
    return nlp


def _weight_bytes_per_token(model: Any) -> Dict[str, int]:
    """Bytes of the weights a decoding step reads (every tensor once; the embedding table
    only where it is the output head too) and bytes held."""
    seen: Dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    head_ptrs = {t.data_ptr() for t in list(head.parameters()) + list(head.buffers())}
    emb_only = sum(
        t.numel() * t.element_size()
        for t in {t.data_ptr(): t for t in list(emb.parameters()) + list(emb.buffers())}.values()
        if t.data_ptr() not in head_ptrs
    )
    held = sum(seen.values())
    return {"held": held, "per_token": held - emb_only}


def child_ours(spec: Dict[str, Any]) -> Dict[str, Any]:
    _imports()
    import torch

    from spacy_llama.models import qlinear

    torch.set_num_threads(spec["threads"])
    qlinear.DENSE = spec.get("dense")  # None: auto (the default); True/False: always/never
    base = _status_kb("VmRSS")
    batches = spec["batches"]
    nlp, load_s, load_peak = _phase_peak_kb(
        lambda: _pipeline(spec["model"], spec["new_tokens"], max(batches))
    )
    pipe = nlp.get_pipe("llama")
    lm = pipe.model
    out: Dict[str, Any] = {
        "rss_imports_gib": base / 2**20,
        "load_s": load_s,
        "peak_load_rss_gib": load_peak / 2**20,
        "rss_after_load_gib": _status_kb("VmRSS") / 2**20,
        "weights_gib": _weight_bytes_per_token(lm.model)["held"] / GiB,
        "weight_bytes_per_token": _weight_bytes_per_token(lm.model)["per_token"],
    }
    from spacy_llama.generation.config import GenerationConfig

    engine = pipe.engine
    full = engine.config
    engine.config = GenerationConfig(max_new_tokens=2)  # warm-up: kernels, packing, caches
    engine.batch_size = 1
    with torch.inference_mode():
        pipe.predict([nlp.make_doc("Warm up.")])
    engine.config = full
    runs = {}
    gen_peak = 0
    for b in batches:
        docs = [nlp.make_doc(t) for t in _texts(spec["docs"][str(b)])]
        engine.batch_size = b
        qlinear.DENSE_CALLS.clear()
        with torch.inference_mode():
            results, secs, peak = _phase_peak_kb(lambda d=docs: pipe.predict(d))
        gen_peak = max(gen_peak, peak)
        tokens = sum(len(r.token_ids) for r in results)
        prompt = max(len(lm.encode(d.text)) for d in docs)
        runs[str(b)] = {
            "docs": len(docs),
            "tokens": tokens,
            "seconds": secs,
            "tok_s": tokens / secs,
            "peak_rss_gib": peak / 2**20,
            "kv_gib": _kv_bytes(lm.model.config, b, prompt + spec["new_tokens"], spec) / GiB,
            "ids": [list(map(int, r.token_ids)) for r in results],
            "projection_calls": dict(qlinear.DENSE_CALLS),  # dense GEMM / kernel
        }
    out["runs"] = runs
    out["peak_gen_rss_gib"] = gen_peak / 2**20
    out["activation_dtype"] = str(next(iter(lm.model.model.norm.parameters())).dtype)
    return out


def _kv_bytes(config: Any, batch: int, positions: int, spec: Dict[str, Any]) -> int:
    """The KV cache of ``batch`` sequences of ``positions`` in the activations' dtype."""
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    head_dim = config.hidden_size // heads
    size = 4 if spec.get("kv_float32") else 2
    return 2 * config.num_hidden_layers * kv * head_dim * positions * batch * size


def child_llama_cpp(spec: Dict[str, Any]) -> Dict[str, Any]:
    from llama_cpp import Llama

    from benchmarks.llama_cpp_batch import batched_greedy

    base = _status_kb("VmRSS")
    llm, load_s, load_peak = _phase_peak_kb(
        lambda: Llama(model_path=spec["path"], n_ctx=512, n_threads=spec["threads"], verbose=False)
    )
    out: Dict[str, Any] = {
        "rss_imports_gib": base / 2**20,
        "load_s": load_s,
        "peak_load_rss_gib": load_peak / 2**20,
        "n_vocab": llm.n_vocab(),
    }
    batched_greedy(spec["path"], ["Warm up."], max_new=2, n_seq=1, llm=llm)
    runs = {}
    gen_peak = 0
    for b in spec["batches"]:
        texts = _texts(spec["docs"][str(b)])
        ids, secs, peak = _phase_peak_kb(
            lambda t=texts, b=b: batched_greedy(
                spec["path"],
                t,
                max_new=spec["new_tokens"],
                n_seq=b,
                threads=spec["threads"],
                llm=llm,
            )
        )
        gen_peak = max(gen_peak, peak)
        tokens = sum(len(i) for i in ids)
        runs[str(b)] = {
            "docs": len(texts),
            "tokens": tokens,
            "seconds": secs,
            "tok_s": tokens / secs,
            "peak_rss_gib": peak / 2**20,
        }
    out["runs"] = runs
    out["peak_gen_rss_gib"] = gen_peak / 2**20
    return out


def child_bandwidth(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    n = spec["mib"] * 2**20 // 4
    a = torch.ones(n, dtype=torch.float32)
    b = torch.empty_like(a)
    b.copy_(a)
    t = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    copy = 5 * 2 * a.numel() * 4 / (time.perf_counter() - t) / 1e9  # read + write
    a.sum()
    t = time.perf_counter()
    for _ in range(5):
        a.sum()
    read = 5 * a.numel() * 4 / (time.perf_counter() - t) / 1e9
    return {"copy_gbs": copy, "read_gbs": read, "threads": spec["threads"]}


def _ppl_text(n_tokens: int, tokenizer: Any) -> List[int]:
    texts = []
    for name in ("gold.jsonl", "sample.jsonl", "unseen_textcat.jsonl"):
        texts += [json.loads(line)["text"] for line in open(ROOT / "corpus" / name)]
    ids = tokenizer.encode("\n\n".join(texts), add_special_tokens=False)
    return list(ids[:n_tokens])


def _nll(logits: np.ndarray, ids: Sequence[int]) -> float:
    """Summed negative log-likelihood of ids[1:] given each previous position's logits."""
    x = logits[: len(ids) - 1].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    return float((lse - x[np.arange(len(ids) - 1), list(ids[1:])]).sum())


def _chunks(ids: List[int], size: int) -> List[List[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def child_quality_ours(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Perplexity of the real SmolLM2-135M (Q4_1) through GGUF.v2 and the float GGUF.v1;
    greedy agreement between the two through the component."""
    _imports()
    import torch

    torch.set_num_threads(spec["threads"])
    from spacy_llama.models.default import smollm2_gguf_path

    path = str(smollm2_gguf_path())
    configs = {
        "gguf_v2": {"@llama_models": "spacy-llama.GGUF.v2", "path": path, "quantize": "auto"},
        "float_gguf_v1": {"@llama_models": "spacy-llama.GGUF.v1", "path": path},
    }
    out: Dict[str, Any] = {"file": path}
    ids_by: Dict[str, List[List[int]]] = {}
    docs_text = _texts(spec["agree_docs"])
    for name, cfg in configs.items():
        nlp = _pipeline(cfg, spec["agree_tokens"], len(docs_text))
        pipe = nlp.get_pipe("llama")
        lm = pipe.model
        ids = _ppl_text(spec["ppl_tokens"], lm.tokenizer)
        nll, count = 0.0, 0
        with torch.inference_mode():
            for chunk in _chunks(ids, spec["ppl_ctx"]):
                logits = lm.model(input_ids=torch.tensor([chunk])).logits[0].float().numpy()
                nll += _nll(logits, chunk)
                count += len(chunk) - 1
            results = pipe.predict([nlp.make_doc(t) for t in docs_text])
        out[name] = {"ppl": float(np.exp(nll / count)), "tokens": count}
        ids_by[name] = [list(map(int, r.token_ids)) for r in results]
        out["ppl_ids"] = ids
    a, b = ids_by["gguf_v2"], ids_by["float_gguf_v1"]
    prefix = [_common_prefix(x, y) / max(len(x), len(y), 1) for x, y in zip(a, b)]
    out["greedy_agreement"] = {
        "docs": len(a),
        "identical": sum(x == y for x, y in zip(a, b)),
        "mean_common_prefix": float(np.mean(prefix)),
        "new_tokens": spec["agree_tokens"],
    }
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def child_quality_llama_cpp(spec: Dict[str, Any]) -> Dict[str, Any]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=spec["path"],
        n_ctx=spec["ppl_ctx"],
        n_batch=spec["ppl_ctx"],
        n_threads=spec["threads"],
        logits_all=True,
        verbose=False,
    )
    nll, count = 0.0, 0
    for chunk in _chunks(spec["ids"], spec["ppl_ctx"]):
        llm.reset()
        llm.eval(chunk)
        nll += _nll(np.asarray(llm.scores[: len(chunk)]), chunk)
        count += len(chunk) - 1
    return {"ppl": float(np.exp(nll / count)), "tokens": count}


CHILDREN = {
    "ours": child_ours,
    "llama_cpp": child_llama_cpp,
    "bandwidth": child_bandwidth,
    "quality_ours": child_quality_ours,
    "quality_llama_cpp": child_quality_llama_cpp,
}


def run_child(spec: Dict[str, Any], budget: Optional[int] = None) -> Dict[str, Any]:
    """One measurement in a fresh process; with ``budget``, the child is killed when its RSS
    goes past it (the result then says so)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.get("threads", 2)))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    peak = 0
    over = False
    out: Dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=(n, s), daemon=True)
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for r in readers:
        r.start()
    while proc.poll() is None:
        try:
            rss = _status_kb("VmRSS", str(proc.pid)) * 1024
        except OSError:
            rss = 0
        peak = max(peak, rss)
        if budget is not None and rss > budget:
            over = True
            proc.kill()
        time.sleep(0.1)
    for r in readers:
        r.join()
    if over:
        return {"error": f"killed: RSS went past the budget of {budget / GiB:.0f} GiB"}
    lines = [line for line in out.get("stdout", "").splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = out.get("stderr", "").strip().splitlines()[-15:]
        return {"error": f"child {spec['kind']} failed ({proc.returncode}): " + "\n".join(tail)}
    result: Dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    result["sampled_peak_rss_gib"] = peak / GiB  # seen from outside, every 0.1 s
    return result


# --------------------------------------------------------------------------- report


def cpu_description() -> Dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted(set(re.findall(r"\bavx512[a-z_0-9]*", text)))
    return {
        "model": model.group(1).strip() if model else "unknown",
        "cores": os.cpu_count(),
        "avx512": flags,
        "avx2": " avx2 " in text,
        "llama_cpp_build": "llama-cpp-python portable wheel (GGML_NATIVE=OFF): AVX2/FMA/F16C "
        "kernels only, no AVX-512, whatever this CPU has",
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _gguf_bytes_per_token(path: str) -> int:
    """Bytes of the tensors llama.cpp reads per generated token (all but an untied
    embedding table, of which it reads one row)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    names = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(names.values())
    return total - names["token_embd.weight"] if "output.weight" in names else total


def _target(value: Optional[float], bound: Optional[float], *, at_least: bool) -> Dict[str, Any]:
    if value is None or bound is None or bound == 0:
        return {"value": value, "bound": bound, "met": None}
    return {
        "value": value,
        "bound": bound,
        "ratio": value / bound,
        "met": value >= bound if at_least else value <= bound,
    }


def _tok_s(result: Dict[str, Any], batch: int) -> Optional[float]:
    run = result.get("runs", {}).get(str(batch))
    return run["tok_s"] if run else None


def assess(
    kind: str,
    size: int,
    ours: Dict[str, Any],
    cpp: Dict[str, Any],
    bandwidth: Dict[str, Any],
    batches: Sequence[int],
    fp32: Optional[Dict[str, Any]],
    cpp_bytes: int,
) -> Dict[str, Any]:
    """The issue's targets for one file, as value / bound / ratio / met."""
    out: Dict[str, Any] = {}
    if "error" in ours:
        return {"error": ours["error"]}
    file_gib = size / GiB
    out["peak_load_rss <= 1.3 x file + 1 GiB"] = _target(
        ours["peak_load_rss_gib"], LOAD_BOUND[0] * file_gib + LOAD_BOUND[1] / GiB, at_least=False
    )
    kv = max(r["kv_gib"] for r in ours["runs"].values())
    out["rss_generating <= 1.2 x file + KV"] = _target(
        ours["peak_gen_rss_gib"], GEN_FACTOR * file_gib + kv, at_least=False
    )
    above = ours["peak_gen_rss_gib"] - ours["rss_imports_gib"]
    out["rss_generating above imports <= 1.2 x file + KV"] = _target(
        above, GEN_FACTOR * file_gib + kv, at_least=False
    )
    for b in batches:
        mine, theirs = _tok_s(ours, b), _tok_s(cpp, b) if "error" not in cpp else None
        factor = B1_VS_LLAMA_CPP if b == 1 else BATCHED_VS_LLAMA_CPP
        out[f"batch {b} tok/s >= {factor} x llama.cpp"] = _target(
            mine, factor * theirs if theirs else None, at_least=True
        )
        if mine and theirs:
            out[f"batch {b} tok/s >= {factor} x llama.cpp"]["vs_llama_cpp"] = mine / theirs
    b1 = _tok_s(ours, 1)
    if b1:
        reached = ours["weight_bytes_per_token"] * b1 / 1e9
        cpp_b1 = _tok_s(cpp, 1) if "error" not in cpp else None
        out["batch 1 bandwidth >= 60% of measured"] = {
            **_target(reached, BANDWIDTH_SHARE * bandwidth["read_gbs"], at_least=True),
            "weights_gb_per_token": ours["weight_bytes_per_token"] / 1e9,
            "reached_gbs": reached,
            "llama_cpp_reached_gbs": cpp_bytes * cpp_b1 / 1e9 if cpp_b1 else None,
            "measured_read_gbs": bandwidth["read_gbs"],
            "measured_copy_gbs": bandwidth["copy_gbs"],
        }
    if fp32 and "error" not in fp32:
        for b in fp32["runs"]:
            mine = _tok_s(ours, int(b))
            if mine:
                out[f"batch {b} vs this project's float32 (HF.v1)"] = {
                    "value": mine,
                    "float32": fp32["runs"][b]["tok_s"],
                    "ratio": mine / fp32["runs"][b]["tok_s"],
                }
    return out


def _g(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return fmt.format(x) if x is not None else "-"


def print_table(report: Dict[str, Any], batches: Sequence[int]) -> None:
    cpu = report["cpu"]
    print(
        f"\nCPU: {cpu['model']}, {cpu['cores']} cores, AVX-512: "
        f"{' '.join(cpu['avx512']) or 'none'}; load average {' '.join(cpu['loadavg'])}"
    )
    print(f"llama.cpp: {cpu['llama_cpp_build']}")
    bw = report.get("bandwidth", {})
    if "copy_gbs" in bw:
        print(
            f"memory bandwidth (torch, {bw['threads']} threads): copy {bw['copy_gbs']:.1f} GB/s "
            f"(read + write), read {bw['read_gbs']:.1f} GB/s"
        )
    cols = "".join(f"{'b' + str(b) + ' tok/s':>11}" for b in batches)
    header = (
        f"{'run':34}{'file GiB':>9}{'load s':>8}{'load RSS':>9}{'gen RSS':>9}{cols}{'b1 GB/s':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for row in report["rows"]:
        r = row["result"]
        if "error" in r:
            print(f"{row['label']:34}  {r['error'].splitlines()[0][:90]}")
            continue
        toks = "".join(f"{_g(_tok_s(r, b), '{:.1f}'):>11}" for b in batches)
        per_token = row.get("bytes_per_token")
        b1 = _tok_s(r, 1)
        gbs = per_token * b1 / 1e9 if per_token and b1 else None
        print(
            f"{row['label']:34}{row['file_bytes'] / GiB:9.2f}{r['load_s']:8.1f}"
            f"{r['peak_load_rss_gib']:9.2f}{_g(r.get('peak_gen_rss_gib')):>9}{toks}"
            f"{_g(gbs, '{:.1f}'):>9}"
        )
    print("\ntargets (value / bound = ratio):")
    for kind, targets in report["targets"].items():
        if "error" in targets:
            print(f"  {kind}: {targets['error'].splitlines()[0][:100]}")
            continue
        for name, t in targets.items():
            if "bound" in t and t.get("ratio") is not None:
                met = {True: "met", False: "NOT met", None: "-"}[t["met"]]
                extra = f", {t['vs_llama_cpp']:.2f}x llama.cpp" if "vs_llama_cpp" in t else ""
                print(
                    f"  {kind:6} {name:46} {t['value']:8.2f} / {t['bound']:8.2f} = "
                    f"{t['ratio']:5.2f}  {met}{extra}"
                )
            elif "float32" in t:
                print(
                    f"  {kind:6} {name:46} {t['value']:8.2f} / {t['float32']:8.2f} = "
                    f"{t['ratio']:5.2f}"
                )
            elif t.get("bound") is None:
                print(f"  {kind:6} {name:46} (no baseline)")
    for name, check in report.get("llama_cpp_checks", {}).items():
        state = check["error"] or (
            f"loads, vocabulary matches: {check['vocab_matches']}, "
            f"generated {check['generated']} tokens"
        )
        print(f"llama.cpp on {name}: {state}")
    big = report.get("big")
    if big:
        print(f"\n{big['label']}: {big['summary']}")
    q = report.get("quality")
    if q:
        print(f"\nquality (real SmolLM2-135M, {q.get('file', '')}):")
        if "error" in q:
            print(f"  {q['error'].splitlines()[0]}")
        else:
            print(
                f"  perplexity on {q['tokens']} corpus tokens: GGUF.v2 {q['ppl_gguf_v2']:.3f}, "
                f"llama.cpp {_g(q.get('ppl_llama_cpp'), '{:.3f}')}, float GGUF.v1 "
                f"{q['ppl_float']:.3f}; GGUF.v2 / llama.cpp = {_g(q.get('ppl_ratio'), '{:.4f}')}"
                f" (target within 1%: {q.get('ppl_within_1pct')})"
            )
            a = q["greedy_agreement"]
            print(
                f"  greedy GGUF.v2 vs float: {a['identical']} of {a['docs']} docs identical "
                f"over {a['new_tokens']} tokens, mean common prefix {a['mean_common_prefix']:.0%}"
            )


# --------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/spacy_llama_scale"))
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (1,16,32)")
    ap.add_argument("--types", default=None, help="comma-separated GGUF types (Q8_0,Q4_0,Q4_K)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: small (the GGUF rows), 8b, fp32, quality, llama_cpp",
    )
    ap.add_argument("--ppl-tokens", type=int, default=None)
    ap.add_argument(
        "--dense",
        action="store_true",
        help="also run each GGUF file with every prompt row on the dense GEMM and with none "
        "(qlinear.DENSE True / False; the default row is auto)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few tokens (for tests)")
    ap.add_argument("--build-only", action="store_true", help="build the model files, stop")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(RESULT + json.dumps(CHILDREN[spec["kind"]](spec)), flush=True)
        return 0
    skip = set(filter(None, args.skip.lower().split(",")))
    quick = args.quick
    batches = [int(b) for b in (args.batches or ("1,2" if quick else "1,16,32")).split(",")]
    types = (args.types or ("Q4_0" if quick else "Q4_0,Q8_0,Q4_K")).split(",")
    new_tokens = args.new_tokens or (4 if quick else 32)
    docs = {str(b): (2 if b == 1 and not quick else b) for b in batches}
    threads = args.threads
    common = {"threads": threads, "new_tokens": new_tokens, "docs": docs}

    built = build(args.work, quick, skip)
    if args.build_only:
        print(json.dumps(built["files"], indent=1))
        return 0
    small = built["small"]["name"]
    files = built["files"]
    report: Dict[str, Any] = {
        "cpu": cpu_description(),
        "quick": quick,
        "settings": {
            "threads": threads,
            "new_tokens": new_tokens,
            "batches": batches,
            "docs_per_batch": docs,
            "greedy": True,
            "prompt_lookup": False,
            "prompts": "corpus/sample.jsonl texts, completion task template '{{ text }}'",
        },
        "shapes": {"small": built["small"], "big": built["big"]},
        "files": files,
        "rows": [],
        "targets": {},
    }

    def save(step: str) -> None:
        """Every number so far, after each child (a long run interrupted keeps its rows)."""
        print(f"[{time.strftime('%H:%M:%S')}] {step}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))

    report["bandwidth"] = run_child(
        {"kind": "bandwidth", "threads": threads, "mib": 64 if quick else 1024}
    )
    save(f"bandwidth: {report['bandwidth']}")
    # the order puts the rows the tables need first: on a loaded machine a full run
    # takes an hour or more
    results: Dict[str, tuple] = {}
    if "small" in skip:  # the 8B row, quality and float32 alone
        types = []
    for kind in types:
        f = files[f"{small}-{kind}.gguf"]
        model = {"@llama_models": "spacy-llama.GGUF.v2", "path": f["path"], "quantize": "auto"}
        # auto is the default (dense prompt rows from qlinear.DENSE_MIN_SLOTS slots on);
        # --dense adds the same file with every prompt row on the dense GEMM, and with none
        variants: List[tuple] = [(None, "auto")]
        if args.dense:
            variants += [(True, "dense prompts"), (False, "kernel only")]
        for dense, label in variants:
            spec = {"kind": "ours", "model": model, **common, "batches": batches, "dense": dense}
            result = run_child(spec)
            for r in result.get("runs", {}).values():
                r.pop("ids", None)
            report["rows"].append(
                {
                    "label": f"GGUF.v2 {kind} ({label})",
                    "file_bytes": f["bytes"],
                    "result": result,
                    "bytes_per_token": result.get("weight_bytes_per_token"),
                }
            )
            save(f"GGUF.v2 {kind} ({label}): {_brief(result)}")
            if dense is None:
                ours = result
        cpp_bytes = _gguf_bytes_per_token(f["path"])
        if "llama_cpp" in skip:
            cpp: Dict[str, Any] = {"error": "skipped"}
        else:
            cpp = run_child({"kind": "llama_cpp", "path": f["path"], **common, "batches": batches})
            if "n_vocab" in cpp:
                cpp["vocab_matches"] = cpp["n_vocab"] == built["small"]["vocab"]
            report["rows"].append(
                {
                    "label": f"llama.cpp {kind}",
                    "file_bytes": f["bytes"],
                    "result": cpp,
                    "bytes_per_token": cpp_bytes,
                }
            )
        results[kind] = (f["bytes"], ours, cpp, cpp_bytes)
        report["targets"][kind] = assess(
            kind, f["bytes"], ours, cpp, report["bandwidth"], batches, None, cpp_bytes
        )
        save(f"llama.cpp {kind}: {_brief(cpp)}")
    measured = {f"{small}-{k}.gguf" for k in types}
    for name, f in files.items():  # llama.cpp loads and runs every other small GGUF
        mine = name.startswith(f"{small}-") and not name.startswith(built["big"]["name"])
        if mine and name.endswith(".gguf") and name not in measured and "llama_cpp" not in skip:
            spec = {**common, "kind": "llama_cpp", "path": f["path"], "batches": [1]}
            check = run_child({**spec, "docs": {"1": 1}})
            report.setdefault("llama_cpp_checks", {})[name] = {
                "vocab_matches": check.get("n_vocab") == built["small"]["vocab"],
                "generated": check.get("runs", {}).get("1", {}).get("tokens"),
                "error": check.get("error"),
            }
            save(f"llama.cpp check {name}: {report['llama_cpp_checks'][name]}")
    if "8b" not in skip:
        report["big"] = big_row(built, files, common, quick, skip)
        report["rows"].extend(report["big"].pop("rows"))
        save(f"8B-shaped: {report['big']['summary']}")
    if "quality" not in skip:
        report["quality"] = quality(threads, quick, args.ppl_tokens, skip)
        save("quality")
    if "fp32" not in skip:
        hf = files[f"{small}-hf"]
        model = {"@llama_models": "spacy-llama.HF.v1", "path": hf["path"], "dtype": "float32"}
        fp32_batch = [b for b in batches if b != 1][:1] if quick else [16]
        spec = {"kind": "ours", "model": model, **common, "batches": fp32_batch}
        fp32 = run_child({**spec, "kv_float32": True})
        for r in fp32.get("runs", {}).values():
            r.pop("ids", None)
        report["rows"].append(
            {
                "label": "HF.v1 float32 (bf16 folder)",
                "file_bytes": hf["bytes"],
                "result": fp32,
                "bytes_per_token": fp32.get("weight_bytes_per_token"),
            }
        )
        for kind, (size, ours, cpp, cpp_bytes) in results.items():
            report["targets"][kind] = assess(
                kind, size, ours, cpp, report["bandwidth"], batches, fp32, cpp_bytes
            )
        save(f"HF.v1 float32: {_brief(fp32)}")
    print_table(report, batches)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def _brief(result: Dict[str, Any]) -> str:
    if "error" in result:
        return result["error"].splitlines()[0]
    runs = ", ".join(f"b{b} {r['tok_s']:.2f} tok/s" for b, r in result.get("runs", {}).items())
    return (
        f"load {result['load_s']:.0f} s, peak load RSS {result['peak_load_rss_gib']:.2f} GiB, "
        f"generating {result.get('peak_gen_rss_gib', 0):.2f} GiB; {runs}"
    )


def big_row(
    built: Dict[str, Any], files: Dict[str, Any], common: Dict[str, Any], quick: bool, skip: set
) -> Dict[str, Any]:
    """The 8B-shaped file: load and generate a few tokens under a 16 GiB budget (the child
    is killed past it), with llama.cpp on the same file beside it."""
    big = built["big"]
    f = files[f"{big['name']}-Q4_K.gguf"]
    spec = {**common, "batches": [1], "docs": {"1": 1}, "new_tokens": 4 if not quick else 2}
    ours = run_child(
        {
            "kind": "ours",
            **spec,
            "model": {
                "@llama_models": "spacy-llama.GGUF.v2",
                "path": f["path"],
                "quantize": "auto",
            },
        },
        budget=BUDGET_8B,
    )
    rows = [
        {
            "label": f"GGUF.v2 {big['name']} Q4_K",
            "file_bytes": f["bytes"],
            "result": ours,
            "bytes_per_token": ours.get("weight_bytes_per_token"),
        }
    ]
    cpp: Dict[str, Any] = {}
    if "llama_cpp" not in skip:
        cpp = run_child({"kind": "llama_cpp", "path": f["path"], **spec}, budget=BUDGET_8B)
        cpp["vocab_matches"] = cpp.get("n_vocab") == big["vocab"]
        rows.append(
            {
                "label": f"llama.cpp {big['name']} Q4_K",
                "file_bytes": f["bytes"],
                "result": cpp,
                "bytes_per_token": _gguf_bytes_per_token(f["path"]),
            }
        )
    for r in ours.get("runs", {}).values():
        r.pop("ids", None)
    if "error" in ours:
        summary = f"GGUF.v2 failed: {ours['error'].splitlines()[0]}"
        met = False
    else:
        peak = max(ours["peak_load_rss_gib"], ours["peak_gen_rss_gib"])
        met = peak * GiB <= BUDGET_8B and _tok_s(ours, 1) is not None
        summary = (
            f"file {f['bytes'] / GiB:.2f} GiB; GGUF.v2 peak RSS {peak:.2f} GiB (load "
            f"{ours['peak_load_rss_gib']:.2f}, generating {ours['peak_gen_rss_gib']:.2f}), "
            f"{_g(_tok_s(ours, 1), '{:.2f}')} tok/s at batch 1; 16 GiB budget "
            f"{'met' if met else 'NOT met'}"
        )
        if cpp and "error" not in cpp:
            summary += (
                f"; llama.cpp peak {max(cpp['peak_load_rss_gib'], cpp['peak_gen_rss_gib']):.2f}"
                f" GiB, {_g(_tok_s(cpp, 1), '{:.2f}')} tok/s"
            )
    return {
        "label": f"{big['name']} Q4_K (memory row)",
        "summary": summary,
        "budget_gib": BUDGET_8B / GiB,
        "met": met,
        "rows": rows,
    }


def quality(threads: int, quick: bool, ppl_tokens: Optional[int], skip: set) -> Dict[str, Any]:
    spec = {
        "kind": "quality_ours",
        "threads": threads,
        "ppl_tokens": ppl_tokens or (96 if quick else 4096),
        "ppl_ctx": 64 if quick else 512,
        "agree_docs": 2 if quick else 8,
        "agree_tokens": 4 if quick else 32,
    }
    ours = run_child(spec)
    if "error" in ours:
        return ours
    out: Dict[str, Any] = {
        "file": Path(ours["file"]).name,
        "tokens": ours["gguf_v2"]["tokens"],
        "ppl_gguf_v2": ours["gguf_v2"]["ppl"],
        "ppl_float": ours["float_gguf_v1"]["ppl"],
        "greedy_agreement": ours["greedy_agreement"],
    }
    if "llama_cpp" not in skip:
        cpp = run_child(
            {
                "kind": "quality_llama_cpp",
                "path": ours["file"],
                "threads": threads,
                "ppl_ctx": spec["ppl_ctx"],
                "ids": ours["ppl_ids"],
            }
        )
        if "error" in cpp:
            out["llama_cpp_error"] = cpp["error"]
        else:
            out["ppl_llama_cpp"] = cpp["ppl"]
            out["ppl_ratio"] = out["ppl_gguf_v2"] / cpp["ppl"]
            out["ppl_within_1pct"] = abs(out["ppl_ratio"] - 1) <= 0.01
    return out


if __name__ == "__main__":
    sys.exit(main())
