"""Training throughput of the llama component against a plain peft + torch loop, peak memory,
adapter size and inference speed before and after training.

Runs, each in a child process of its own (so peak RSS is the run's), on the same model, the
same gold batches (corpus/splits/gold_train.spacy), batch size, dtype and LoRA config
(configs/train_textcat.cfg: TextCat.v2, calibrated, LoRA r=8 on q/k/v/o):
  spacy  ``LlamaPipe.update`` with thinc's Adam (the batched loss: shared prompt prefix once,
         one prompt pass per request with its KV cache expanded over the label candidates,
         micro-batches of the component's batch_size rows);
  plain  the loop a careful user writes: ``peft.get_peft_model`` with the same LoraConfig,
         every (prompt + candidate) row right padded into micro-batches of the same size, one
         transformers forward with full logits, the same calibrated cross-entropy,
         ``torch.optim.Adam``;
  infer  ``nlp.pipe`` over the dev docs on the untrained model (no adapter block), then the
         same after a few training steps (adapters merged into the fused decoder's weights).
Tokens are those of the teacher-forced rows (prompt + candidate per candidate, the content-
free probes included), the same count for both paths; the tokens each path actually runs
through the model are printed too. The step-0 losses of the two paths must agree (the
adapters start at B = 0, so both are the base model's loss); the script checks it.

    python benchmarks/train.py [--steps 6] [--batch 8] [--dtype float32|bfloat16]
                               [--model-path HF_FOLDER] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPLITS = ROOT / "corpus" / "splits"
GOLD_LABELS = ["business", "sport", "science_tech", "politics"]


def build(args: argparse.Namespace, *, adapter: bool) -> Any:
    """configs/train_textcat.cfg (optionally on another HF model), with or without LoRA."""
    import spacy

    overrides: Dict[str, Any] = {"components.llama.model.dtype": args.dtype}
    cfg = spacy.util.load_config(ROOT / "configs" / "train_textcat.cfg", overrides=overrides)
    if args.model_path:
        cfg["components"]["llama"]["model"] = {
            "@llama_models": "spacy-llama.HF.v1", "path": args.model_path,
            "device": "cpu", "dtype": args.dtype,
        }  # fmt: skip
    # The gold labels, named: train_textcat.cfg takes them from the data in initialize, which
    # these children skip (the plain peft loop needs the same labels in the same order).
    cfg["components"]["llama"]["task"]["labels"] = GOLD_LABELS
    if not adapter:
        del cfg["components"]["llama"]["adapter"]
    torch.manual_seed(0)  # peft's random lora_A: the same in both paths
    return spacy.util.load_model_from_config(cfg, auto_fill=True)


def examples(nlp: Any, split: str, limit: Optional[int]) -> List[Any]:
    from spacy.tokens import DocBin
    from spacy.training import Example

    docs = list(DocBin().from_disk(SPLITS / f"gold_{split}.spacy").get_docs(nlp.vocab))
    docs = docs[:limit] if limit else docs
    return [Example(nlp.make_doc(d.text), d) for d in docs]


def batches(egs: List[Any], size: int, steps: int) -> List[List[Any]]:
    """``steps`` batches of ``size`` in order, cycling through the data; batch 0 again first
    as the untimed warm-up step."""
    out = [[egs[(s * size + j) % len(egs)] for j in range(size)] for s in range(steps)]
    return [out[0], *out]


def row_tokens(pipe: Any, batch: List[Any]) -> int:
    """The tokens of the batch's teacher-forced rows: prompt + candidate, per candidate."""
    from spacy_llama.generation.scoring import Scorer

    scorer = Scorer(pipe.model, batch_size=1)
    prepared = [
        scorer.prepare(i, r)
        for i, r in enumerate(pipe.task.requests([eg.predicted for eg in batch]))
    ]
    return sum(len(p.prefix) + len(c) for p in prepared for c in p.conts)


# -- the children ----------------------------------------------------------------------------
def child_spacy(args: argparse.Namespace) -> Dict[str, Any]:
    from thinc.api import Adam

    import spacy_llama.training.losses as losses

    nlp = build(args, adapter=True)
    pipe = nlp.get_pipe("llama")
    egs = examples(nlp, "train", args.limit)
    forwarded = [0]
    real_run = losses.run

    def counting_run(module: Any, rows: Sequence[Sequence[int]], past: Any, **kw: Any) -> Any:
        forwarded[0] += sum(len(r) for r in rows)
        return real_run(module, rows, past, **kw)

    losses.run = counting_run  # type: ignore[assignment]
    opt = Adam(args.learn_rate, grad_clip=1.0, use_averages=False)
    first = None
    timed = 0.0
    tokens = 0
    for k, batch in enumerate(batches(egs, args.batch, args.steps)):
        t0 = time.perf_counter()
        loss = pipe.update(batch, sgd=opt)["llama"]
        if k == 0:
            first = loss
            forwarded[0] = 0
            continue
        timed += time.perf_counter() - t0
        tokens += row_tokens(pipe, batch)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.adapter.to_disk(Path(tmp))
        adapter_bytes = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))
    base_bytes = sum(
        p.numel() * p.element_size()
        for p in pipe.adapter.peft.get_base_model().parameters()
        if not p.requires_grad
    )
    return {
        "seconds": timed,
        "tokens": tokens,
        "forwarded": forwarded[0],
        "first_loss": first,
        "docs": args.batch * args.steps,
        "adapter_bytes": adapter_bytes,
        "base_bytes": base_bytes,
    }


def child_plain(args: argparse.Namespace) -> Dict[str, Any]:
    """What a careful user writes with peft + torch: the same loss, the obvious way."""
    from peft import LoraConfig, get_peft_model

    from spacy_llama.generation.scoring import Scorer

    nlp = build(args, adapter=False)
    pipe = nlp.get_pipe("llama")
    task, lm = pipe.task, pipe.model
    s = (
        nlp.config["components"]["llama"]["adapter"]
        if "adapter" in nlp.config["components"]["llama"]
        else None
    )
    s = s or build_settings()
    torch.manual_seed(0)
    model = get_peft_model(lm.model, LoraConfig(
        r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
        target_modules=list(s["target_modules"]), bias="none",
    ))  # fmt: skip
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.learn_rate)
    scorer = Scorer(lm, batch_size=1)
    egs = examples(nlp, "train", args.limit)
    first, timed, tokens = None, 0.0, 0
    for k, batch in enumerate(batches(egs, args.batch, args.steps)):
        t0 = time.perf_counter()
        requests = task.requests([eg.predicted for eg in batch])
        prepared = [scorer.prepare(i, r) for i, r in enumerate(requests)]
        rows = [
            (p.prefix + c, len(p.prefix) + f) for p in prepared for c, f in zip(p.conts, p.first)
        ]
        logps = []
        for i in range(0, len(rows), pipe.batch_size):  # the component's rows per forward
            part = rows[i : i + pipe.batch_size]
            width = max(len(r) for r, _ in part)
            ids = torch.zeros((len(part), width), dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for j, (r, _) in enumerate(part):
                ids[j, : len(r)] = torch.tensor(r)
                mask[j, : len(r)] = 1
            lp = torch.log_softmax(
                model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1
            )
            lp = lp.gather(-1, ids[:, 1:, None])[..., 0]
            for j, (r, start) in enumerate(part):
                mine = lp[j, start - 1 : len(r) - 1]
                logps.append(mine.mean() if task.length_normalize else mine.sum())
        values, at = [], 0
        for p in prepared:
            values.append(torch.stack(logps[at : at + len(p.conts)]))
            at += len(p.conts)
        per = 1 if task.exclusive else len(task.labels)
        n_probes = len(values) - per * len(batch)
        priors = [
            torch.stack(values[q:n_probes:per]).mean(0) if n_probes else None for q in range(per)
        ]
        loss = torch.zeros(())
        for d, eg in enumerate(batch):
            for q, gold in enumerate(task.gold_candidates(eg.reference)):
                v = values[n_probes + d * per + q]
                v = v - priors[q] if priors[q] is not None else v
                loss = loss + torch.nn.functional.cross_entropy(v[None], torch.tensor([gold]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if k == 0:
            first = float(loss.detach())
            continue
        timed += time.perf_counter() - t0
        tokens += sum(len(r) for r, _ in rows)
    return {
        "seconds": timed,
        "tokens": tokens,
        "forwarded": tokens,
        "first_loss": first,
        "docs": args.batch * args.steps,
    }


def build_settings() -> Dict[str, Any]:
    import spacy

    cfg = spacy.util.load_config(ROOT / "configs" / "train_textcat.cfg")
    return dict(cfg["components"]["llama"]["adapter"])


def child_infer(args: argparse.Namespace) -> Dict[str, Any]:
    from thinc.api import Adam

    texts = [eg.reference.text for eg in examples(build(args, adapter=False), "dev", args.limit)]

    def speed(nlp: Any) -> Tuple[float, bool]:
        pipe = nlp.get_pipe("llama")
        tokens = row_tokens(pipe, [type("E", (), {"predicted": nlp.make_doc(t)}) for t in texts])
        list(nlp.pipe(texts[:2]))  # warm-up: fuses the decoder
        best = min(_timed(lambda: list(nlp.pipe(texts))) for _ in range(args.repeat))
        return tokens / best, pipe.engine.fast is not None

    before, fused_before = speed(build(args, adapter=False))
    nlp = build(args, adapter=True)
    pipe = nlp.get_pipe("llama")
    egs = examples(nlp, "train", args.limit)
    opt = Adam(1e-3, grad_clip=1.0, use_averages=False)
    for batch in batches(egs, args.batch, 2):
        pipe.update(batch, sgd=opt)
    lora_b = max(
        float(p.abs().max()) for n, p in pipe.adapter.peft.named_parameters() if "lora_B" in n
    )
    after, fused_after = speed(nlp)
    return {
        "before": before,
        "after": after,
        "fused_before": fused_before,
        "fused_after": fused_after,
        "lora_b_max": lora_b,
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CHILDREN = {"spacy": child_spacy, "plain": child_plain, "infer": child_infer}


def run_child(kind: str, argv: Sequence[str]) -> Dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv, "--child", kind],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(
    spacy_run: Dict[str, Any], plain: Dict[str, Any], infer: Dict[str, Any], args: Any
) -> int:
    mb = 1024 * 1024
    print(
        f"model: {args.model_path or 'SmolLM2-135M (spacy-llama.SmolLM2.v1)'}, dtype {args.dtype}, "
        f"{args.steps} timed steps of {args.batch} gold docs (+1 warm-up), "
        f"torch threads {spacy_run.get('threads')}"
    )
    print(
        f"{'run':<7} {'docs/s':>8} {'tok/s':>9} {'tokens forwarded':>17} "
        f"{'peak RSS MB':>12} {'step-0 loss':>12}"
    )
    for name, r in (("spacy", spacy_run), ("plain", plain)):
        print(
            f"{name:<7} {r['docs'] / r['seconds']:>8.2f} {r['tokens'] / r['seconds']:>9.0f} "
            f"{r['forwarded']:>17} {r['peak_rss'] / mb:>12.0f} {r['first_loss']:>12.4f}"
        )
    same = abs(spacy_run["first_loss"] - plain["first_loss"]) <= 1e-3 * max(
        1.0, abs(plain["first_loss"])
    )
    print(f"step-0 loss spacy == plain: {'yes' if same else 'NO'}")
    print(
        f"training speed spacy / plain: {plain['seconds'] / spacy_run['seconds']:.2f}x "
        f"(tokens forwarded: {spacy_run['forwarded'] / plain['forwarded']:.2f}x)"
    )
    print(f"peak RSS spacy / plain: {spacy_run['peak_rss'] / plain['peak_rss']:.2f}x")
    share = 100 * spacy_run["adapter_bytes"] / spacy_run["base_bytes"]
    print(
        f"adapter on disk: {spacy_run['adapter_bytes'] / mb:.2f} MB = {share:.2f}% of the base "
        f"weights ({spacy_run['base_bytes'] / mb:.0f} MB at {args.dtype})"
    )
    print(
        f"inference tok/s before training {infer['before']:.0f} "
        f"(fused decoder: {infer['fused_before']}), "
        f"after (adapters merged, max |lora_B| {infer['lora_b_max']:.2g}) {infer['after']:.0f} "
        f"(fused decoder: {infer['fused_after']}): "
        f"after / before {infer['after'] / infer['before']:.2f}x"
    )
    return 0 if same and infer["fused_after"] else 1


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed training steps")
    ap.add_argument("--batch", type=int, default=8, help="docs per step (the config's batcher)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--learn-rate", type=float, default=1e-4)
    ap.add_argument("--model-path", default=None, help="an HF folder instead of SmolLM2")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N docs")
    ap.add_argument("--repeat", type=int, default=2, help="inference passes (the best counts)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--child", default=None, choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        out = CHILDREN[args.child](args)
        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["threads"] = torch.get_num_threads()
        print(json.dumps(out))
        return 0
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = {kind: run_child(kind, passed) for kind in ("spacy", "plain", "infer")}
    return report(results["spacy"], results["plain"], results["infer"], args)


if __name__ == "__main__":
    sys.exit(main())
