"""Speed of label scoring (TextCat) against the ways people score label candidates.

On the same requests (corpus/sample.jsonl through configs/textcat.cfg: en_core_web_sm, then
the TextCat task's prompt with every label as a candidate continuation) it runs, in one
process, one after another:
  A  one forward pass per prompt + candidate (what a one-prompt-at-a-time loop does);
  B  prompt + candidate sequences batched, right padded, ``--batch-size`` rows per pass;
  C  this component's Scorer: the prompt prefix shared by a doc's candidates (and by all
     docs: the instruction and label definitions) runs once, its KV cache is reused for
     every candidate, and only the candidates' tokens run again; on the engine's fused
     decoder (C) and, for comparison, on transformers' forward pass (C-hf).
Prints candidates/s, the ratio to A, and the largest difference of the summed
log-probabilities against A (they must agree up to float rounding).

    python benchmarks/scoring.py [--batch-size 16] [--limit N] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def full_sequence_scores(
    model: Any, rows: Sequence[Any], *, batch: int, pad: int
) -> List[float]:
    """Summed log-probability of each candidate, from prompt + candidate run whole."""
    out: List[float] = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        seqs = [prefix + cont for prefix, cont, _ in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        for r, (prefix, cont, first) in enumerate(chunk):
            # token j of the continuation is predicted at position len(prefix) + j - 1
            pos = torch.arange(len(prefix) + first - 1, len(prefix) + len(cont) - 1)
            lp = torch.log_softmax(logits[r, pos].float(), -1)
            out.append(float(lp.gather(-1, torch.tensor(cont[first:])[:, None]).sum()))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=16, help="rows per pass for B and C")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N docs")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)

    import spacy

    from spacy_llama.generation.scoring import Scorer

    config = spacy.util.load_config(
        ROOT / "configs" / "textcat.cfg",
        overrides={"components.llama.model.dtype": args.dtype},
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    texts = [json.loads(line)["text"] for line in open(ROOT / "corpus" / "sample.jsonl")]
    texts = texts[: args.limit] if args.limit else texts
    with nlp.select_pipes(disable=["llama"]):
        docs = list(nlp.pipe(texts))
    pipe = nlp.get_pipe("llama")
    requests = pipe.task.requests(docs)
    lm = pipe.model
    scorer = Scorer(lm, batch_size=args.batch_size, fast=pipe.engine.fast)
    scorer_hf = Scorer(lm, batch_size=args.batch_size)
    prepared = [scorer.prepare(i, r) for i, r in enumerate(requests)]
    rows = [(p.prefix, c, f) for p in prepared for c, f in zip(p.conts, p.first)]
    tokens = sum(len(p) + len(c) for p, c, _ in rows)
    pad = lm.pad_token_id
    timings = {}
    with torch.inference_mode():
        full_sequence_scores(lm.model, rows[:2], batch=2, pad=pad)  # warm-up
        scorer.score(requests[:1])
        scorer_hf.score(requests[:1])
        t = time.perf_counter()
        a = full_sequence_scores(lm.model, rows, batch=1, pad=pad)
        timings["A  one pass per prompt + candidate"] = (time.perf_counter() - t, a)
        t = time.perf_counter()
        b = full_sequence_scores(lm.model, rows, batch=args.batch_size, pad=pad)
        timings[f"B  batched prompt + candidate, {args.batch_size} rows"] = (
            time.perf_counter() - t,
            b,
        )
        t = time.perf_counter()
        results = scorer.score(requests)
        c = [s for res in results for s in res.sums]
        timings[f"C  spacy-llama Scorer, {args.batch_size} rows"] = (time.perf_counter() - t, c)
        t = time.perf_counter()
        results = scorer_hf.score(requests)
        c = [s for res in results for s in res.sums]
        timings["C-hf  the same on transformers' forward"] = (time.perf_counter() - t, c)

    print(
        f"\n{len(requests)} docs, {len(rows)} candidates, {tokens} prompt+candidate tokens "
        f"({tokens / len(rows):.0f} per candidate), dtype {args.dtype}"
    )
    print(f"{'run':44s} {'seconds':>8s} {'cand/s':>8s} {'vs A':>6s} {'max |diff| vs A':>16s}")
    base = None
    for name, (secs, scores) in timings.items():
        rate = len(rows) / secs
        base = base or rate
        diff = max(abs(x - y) for x, y in zip(scores, a))
        print(f"{name:44s} {secs:8.2f} {rate:8.1f} {rate / base:5.1f}x {diff:16.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
