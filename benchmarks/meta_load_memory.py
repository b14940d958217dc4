"""Peak memory of spacy-llama.Meta.v1 while it loads a Meta checkpoint.

Builds a synthetic Meta folder (random bf16 weights, a few hundred MB; tiktoken-format
tokenizer.model sized to the vocabulary), then loads it in a fresh subprocess per case and
reports peak RSS (VmHWM) above the RSS after imports, as a ratio of the loaded weights' bytes.
A ratio near 1.0 means "one copy of the weights". Two reference rows show what the frugal
path avoids: a naive loader (torch.load without mmap, then torch.cat) and our loader with the
page release switched off.

    python benchmarks/meta_load_memory.py [--dim 1024 --layers 8 --vocab 32768]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

CHILD = r"""
import json, sys
from pathlib import Path

import torch
import transformers  # noqa: F401  (imports count toward the baseline, not the load)
from transformers import LlamaForCausalLM  # noqa: F401

import spacy_llama.models.meta as meta


def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


folder, mode, dtype = Path(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3])
files = meta.shard_files(folder)
baseline = rss_kb("VmRSS")
if mode == "naive":
    shards = [torch.load(str(f), map_location="cpu", weights_only=True) for f in files]
    merged = {}
    for key in shards[0]:
        parts = [s[key] for s in shards]
        dim = 1 if key.endswith(("wo.weight", "w2.weight")) else 0
        merged[key] = (torch.cat(parts, dim) if len(parts) > 1 else parts[0]).to(dtype)
    weights = sum(t.numel() * t.element_size() for t in merged.values())
else:
    if mode == "no-release":
        meta.paging._MADVISE = None  # where drop_pages reads it
    ckpt = meta.build_meta(folder, dtype=dtype)
    weights = sum(p.numel() * p.element_size() for p in ckpt.model.parameters())
peak = rss_kb("VmHWM")
print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "weight_bytes": weights}))
"""


def ffn_dim(dim: int, multiple_of: int) -> int:
    return multiple_of * math.ceil(int(2 * 4 * dim / 3) / multiple_of)


def write_tokenizer(path: Path, vocab: int) -> None:
    """A tiktoken rank file with ``vocab - 256`` ranks (the 256 specials come on top)."""
    tokens: List[bytes] = [bytes([i]) for i in range(256)]
    seen = set(tokens)
    i = 0
    while len(tokens) < vocab - 256:  # pairs of earlier tokens: valid, deterministic BPE
        cand = tokens[i % len(tokens)] + tokens[(i * 7919) % len(tokens)]
        i += 1
        if cand not in seen and len(cand) <= 16:
            seen.add(cand)
            tokens.append(cand)
    lines = (f"{base64.b64encode(t).decode()} {r}" for r, t in enumerate(tokens))
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def write_checkpoint(folder: Path, *, dim: int, layers: int, vocab: int, mp: int) -> int:
    """Random bf16 Meta shards (Llama 3 layout); returns the checkpoint's bytes."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    heads = dim // 64
    ffn = ffn_dim(dim, 256)
    params = {
        "dim": dim,
        "n_layers": layers,
        "n_heads": heads,
        "n_kv_heads": heads,
        "vocab_size": vocab,
        "multiple_of": 256,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
    }
    (folder / "params.json").write_text(json.dumps(params))
    write_tokenizer(folder / "tokenizer.model", vocab)
    gen = torch.Generator().manual_seed(0)
    shapes: Dict[str, tuple] = {
        "tok_embeddings.weight": ((vocab, dim), 0),
        "norm.weight": ((dim,), None),
        "output.weight": ((vocab, dim), 0),
    }
    for i in range(layers):
        for name, shape, split in [
            ("attention.wq.weight", (dim, dim), 0),
            ("attention.wk.weight", (dim, dim), 0),
            ("attention.wv.weight", (dim, dim), 0),
            ("attention.wo.weight", (dim, dim), 1),
            ("feed_forward.w1.weight", (ffn, dim), 0),
            ("feed_forward.w2.weight", (dim, ffn), 1),
            ("feed_forward.w3.weight", (ffn, dim), 0),
            ("attention_norm.weight", (dim,), None),
            ("ffn_norm.weight", (dim,), None),
        ]:
            shapes[f"layers.{i}.{name}"] = (shape, split)
    shards: List[Dict[str, torch.Tensor]] = [{} for _ in range(mp)]
    total = 0
    for key, (shape, split) in shapes.items():
        full = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        parts = (
            [full.clone() for _ in range(mp)]
            if split is None
            else [p.clone() for p in full.chunk(mp, dim=split)]
        )
        for shard, part in zip(shards, parts):
            shard[key] = part
            total += part.numel() * part.element_size()
    for i, shard in enumerate(shards):
        torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    return total


def measure(folder: Path, mode: str, dtype: str) -> Dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), mode, dtype],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed ({mode}, {dtype}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: float(v) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        cases = [  # (shards, mode, target dtype)
            (1, "meta.v1", "bfloat16"),
            (2, "meta.v1", "bfloat16"),
            (1, "meta.v1", "float32"),
            (1, "no-release", "bfloat16"),
            (2, "naive", "bfloat16"),
        ]
        sizes: Dict[int, int] = {}
        for mp in sorted({c[0] for c in cases}):
            sizes[mp] = write_checkpoint(
                Path(tmp) / f"mp{mp}", dim=args.dim, layers=args.layers, vocab=args.vocab, mp=mp
            )
        header = (
            f"{'loader':<11}{'shards':>7}{'ckpt MB':>9}{'dtype':>10}{'weights MB':>12}"
            f"{'peak-base MB':>14}{'ratio':>7}"
        )
        print(header)
        print("-" * len(header))
        for mp, mode, dtype in cases:
            r = measure(Path(tmp) / f"mp{mp}", mode, dtype)
            extra = (r["peak_kb"] - r["baseline_kb"]) * 1024
            print(
                f"{mode:<11}{mp:>7}{sizes[mp] / 1e6:>9.0f}{dtype:>10}"
                f"{r['weight_bytes'] / 1e6:>12.0f}{extra / 1e6:>14.0f}"
                f"{extra / r['weight_bytes']:>7.2f}"
            )


if __name__ == "__main__":
    main()
