"""Zero-shot TextCat.v2 vs LoRA-trained TextCat (configs/train_textcat.cfg) vs spaCy's own
``textcat`` (``spacy init config -p textcat``, default CPU config), all trained on the same
train split and scored with ``python -m spacy evaluate`` on the test split; on the gold set
and on the unseen set (five classes). Writes benchmarks/TRAIN.md.

    python benchmarks/train_quality.py [--sets gold,unseen] [--learn-rates 1e-4,5e-4,2e-3]
                                       [--epochs 3] [--output benchmarks/TRAIN.md]

Hyper-parameters are chosen on dev only: for each learn rate a LoRA run; the run with the best
dev macro-F (spaCy's model-best, itself the best dev evaluation of the run) is the one scored
on test. spaCy's textcat runs its default config unchanged (its own dev-based model-best).
Everything goes through the CLI commands a user runs (subprocesses), so the numbers include
nothing a user would not get.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import spacy
from spacy.tokens import DocBin

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "corpus" / "splits"
TRAIN_CFG = ROOT / "configs" / "train_textcat.cfg"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> Tuple[float, str]:
    """Run ``python -m spacy ...``; its wall time and output (raises on failure)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", *args], capture_output=True, text=True, env=ENV
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"spacy {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return time.perf_counter() - t0, proc.stdout


def labels_of(path: Path) -> List[str]:
    docs = DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)
    return sorted({k for d in docs for k in d.cats})


def llama_config(labels: Sequence[str], out: Path, *, adapter: bool) -> Path:
    """configs/train_textcat.cfg with the set's labels (verbalizers only for the gold set's
    own labels) and, for zero-shot, without the adapter block."""
    cfg = spacy.util.load_config(TRAIN_CFG)
    task = cfg["components"]["llama"]["task"]
    task["labels"] = list(labels)
    task["verbalizers"] = {k: v for k, v in task.get("verbalizers", {}).items() if k in labels}
    if not adapter:
        del cfg["components"]["llama"]["adapter"]
    cfg.to_disk(out)
    return out


def evaluate(model: Path, test: Path, out: Path) -> Dict[str, float]:
    _, _ = _cli("evaluate", str(model), str(test), "--output", str(out))
    scores = json.loads(out.read_text())
    return {
        "macro_f": 100 * float(scores["cats_macro_f"]),
        "acc": 100 * float(scores.get("cats_micro_f", 0.0)),
    }


def dev_score(model: Path) -> float:
    meta = json.loads((model / "meta.json").read_text())
    # meta.json keeps the score_weights keys: cats_score, the macro-F of exclusive classes
    return 100 * float(meta["performance"]["cats_score"])


def zero_shot(name: str, labels: List[str], tmp: Path) -> Dict[str, Any]:
    cfg = llama_config(labels, tmp / f"{name}_zero.cfg", adapter=False)
    t0 = time.perf_counter()
    nlp = spacy.util.load_model_from_config(spacy.util.load_config(cfg), auto_fill=True)
    nlp.initialize()
    nlp.to_disk(tmp / f"{name}_zero")
    dev = evaluate(tmp / f"{name}_zero", SPLITS / f"{name}_dev.spacy", tmp / "d.json")
    test = evaluate(tmp / f"{name}_zero", SPLITS / f"{name}_test.spacy", tmp / "t.json")
    return {
        "system": "zero-shot TextCat.v2 (SmolLM2-135M)",
        "dev": dev["macro_f"],
        "test": test["macro_f"],
        "seconds": time.perf_counter() - t0,
        "note": "no training",
    }


def lora(
    name: str, labels: List[str], tmp: Path, rates: List[float], epochs: int
) -> Dict[str, Any]:
    cfg = llama_config(labels, tmp / f"{name}_lora.cfg", adapter=True)
    runs = []
    for lr in rates:
        out = tmp / f"{name}_lora_{lr:g}"
        seconds, _ = _cli(
            "train", str(cfg), "-o", str(out),
            "--paths.train", str(SPLITS / f"{name}_train.spacy"),
            "--paths.dev", str(SPLITS / f"{name}_dev.spacy"),
            "--training.max_epochs", str(epochs),
            "--training.optimizer.learn_rate", str(lr),
        )  # fmt: skip
        runs.append((dev_score(out / "model-best"), lr, seconds, out))
        print(
            f"  {name} LoRA lr={lr:g}: dev macro-F {runs[-1][0]:.1f} ({seconds:.0f} s)", flush=True
        )
    best = max(runs, key=lambda r: r[0])  # chosen on dev
    test = evaluate(best[3] / "model-best", SPLITS / f"{name}_test.spacy", tmp / "t.json")
    tried = ", ".join(f"{lr:g}: {d:.1f}" for d, lr, _, _ in runs)
    return {
        "system": "LoRA-trained TextCat.v2 (SmolLM2-135M, configs/train_textcat.cfg)",
        "dev": best[0],
        "test": test["macro_f"],
        "seconds": best[2],
        "note": f"{epochs} epochs; learn rate {best[1]:g} chosen on dev "
        f"(dev macro-F per rate: {tried})",
    }


def spacy_textcat(name: str, tmp: Path) -> Dict[str, Any]:
    cfg = tmp / f"{name}_spacy.cfg"
    _cli("init", "config", "-p", "textcat", "-l", "en", "-F", str(cfg))
    out = tmp / f"{name}_spacy"
    seconds, _ = _cli(
        "train", str(cfg), "-o", str(out),
        "--paths.train", str(SPLITS / f"{name}_train.spacy"),
        "--paths.dev", str(SPLITS / f"{name}_dev.spacy"),
    )  # fmt: skip
    test = evaluate(out / "model-best", SPLITS / f"{name}_test.spacy", tmp / "t.json")
    return {
        "system": "spaCy textcat (init config -p textcat, CPU default)",
        "dev": dev_score(out / "model-best"),
        "test": test["macro_f"],
        "seconds": seconds,
        "note": "default config unchanged",
    }


def majority(name: str) -> Dict[str, Any]:
    """The train split's most frequent class for every doc, scored as spaCy scores cats."""
    from spacy.scorer import Scorer
    from spacy.training import Example

    nlp = spacy.blank("en")
    train = list(DocBin().from_disk(SPLITS / f"{name}_train.spacy").get_docs(nlp.vocab))
    counts: Dict[str, int] = {}
    for d in train:
        best = max(d.cats, key=lambda k: d.cats[k])
        counts[best] = counts.get(best, 0) + 1
    top = max(counts, key=lambda k: counts[k])
    scores = {}
    for split in ("dev", "test"):
        egs = []
        for d in DocBin().from_disk(SPLITS / f"{name}_{split}.spacy").get_docs(nlp.vocab):
            pred = nlp.make_doc(d.text)
            pred.cats = {k: float(k == top) for k in d.cats}
            egs.append(Example(pred, d))
        scores[split] = (
            100
            * Scorer.score_cats(egs, "cats", labels=list(d.cats), multi_label=False)["cats_macro_f"]
        )
    return {
        "system": f"majority class of train ({top})",
        "dev": scores["dev"],
        "test": scores["test"],
        "seconds": 0.0,
        "note": "baseline",
    }


def table(results: Dict[str, List[Dict[str, Any]]], cpu: str) -> str:
    lines = [
        "# Training quality: zero-shot vs LoRA vs spaCy textcat",
        "",
        "Written by `python benchmarks/train_quality.py` (macro-F x 100 from "
        "`python -m spacy evaluate`; train time = wall time of `spacy train` on a shared "
        f"2-core CPU: {cpu}). Choices are made on dev; test is never tuned on.",
        "",
    ]
    for name, rows in results.items():
        n = {
            s: len(DocBin().from_disk(SPLITS / f"{name}_{s}.spacy"))
            for s in ("train", "dev", "test")
        }
        lines += [
            f"## {name} (train {n['train']} / dev {n['dev']} / test {n['test']} docs)",
            "",
            "| system | dev macro-F | test macro-F | train time (s) | notes |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {r['system']} | {r['dev']:.1f} | {r['test']:.1f} | {r['seconds']:.0f} "
            f"| {r['note']} |"
            for r in rows
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="gold,unseen")
    p.add_argument("--learn-rates", default="1e-4,5e-4,2e-3")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "TRAIN.md"))
    args = p.parse_args(list(argv))
    rates = [float(x) for x in args.learn_rates.split(",")]
    cpu = (
        " ".join(
            sorted({w for w in Path("/proc/cpuinfo").read_text().split() if w.startswith("avx512")})
        )
        or "no AVX-512"
    )
    results: Dict[str, List[Dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name in args.sets.split(","):
            labels = labels_of(SPLITS / f"{name}_train.spacy")
            print(f"{name}: labels {labels}", flush=True)
            rows = [majority(name), zero_shot(name, labels, tmp)]
            print(f"  zero-shot: {rows[-1]}", flush=True)
            rows.append(spacy_textcat(name, tmp))
            print(f"  spaCy textcat: {rows[-1]}", flush=True)
            rows.append(lora(name, labels, tmp, rates, args.epochs))
            print(f"  LoRA: {rows[-1]}", flush=True)
            results[name] = rows
    text = table(results, cpu)
    Path(args.output).write_text(text + "\n", encoding="utf8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
