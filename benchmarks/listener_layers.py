"""A linear probe per hidden layer of SmolLM2-135M, and the listener textcat against it.

    python benchmarks/listener_layers.py [--output benchmarks/LAYERS.md]
        [--states DIR] [--runs DIR] [--no-listener]

Sets: corpus/splits/{gold,unseen,tweets}_{train,dev,test}.spacy (tweets: the public
sentiment set of corpus/build_tweets.py). The test halves are only reported, never used to
choose anything.

The probe: for every doc, the hidden states of every layer (0 = embeddings ... 30 = last),
computed once through the listener's own batching (features/batching.py: right padding,
positions from 0, eager attention), mean pooled over the doc's pieces. Per layer, a
multinomial logistic regression (torch, L2, features standardised on train) is fit on
train, its L2 strength chosen on dev; dev and test macro F are reported per layer. This
measures what the frozen features hold at each layer.

The listener: ``spacy train configs/train_listener_textcat.cfg`` on each set for every
setting of ``GRID`` (layer, learning rate, epochs, pooling), model-best on dev. The setting
with the best mean dev macro F over the sets is chosen; on the test halves it is compared
with the config before and with the probe fit on that trained listener's own pooled
features (the textcat's input). ``--states`` caches the probe's states, ``--runs`` keeps
(and reuses) the trained pipelines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SETS = ("gold", "unseen", "tweets")
L2 = (1e-4, 1e-3, 1e-2, 1e-1)


def pooled_states(folder: Path, texts: List[str]) -> numpy.ndarray:
    """(layers, docs, hidden): each doc's states at every layer, mean over its pieces."""
    from spacy_llama.features.batching import hidden_states
    from spacy_llama.models.hf import hf_model_v1

    llama = hf_model_v1(folder, device="cpu", dtype="float32")
    rows = [llama.encode(t, add_special_tokens=True) for t in texts]
    out = []
    for start in range(0, len(rows), 16):
        part = rows[start : start + 16]
        grid = hidden_states(llama.model.base_model, part, llama.pad_token_id, "mix", 4096)
        for i, row in enumerate(part):
            out.append(grid[:, i, : len(row)].mean(axis=1))
    return numpy.stack(out, axis=1)


def fit_predict(
    x_train: numpy.ndarray, y_train: numpy.ndarray, xs: List[numpy.ndarray], n: int, l2: float
) -> List[numpy.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    torch.manual_seed(0)
    xt = torch.tensor((x_train - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y_train)
    w = torch.zeros(xt.shape[1], n, requires_grad=True)
    b = torch.zeros(n, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return [
            (torch.tensor((x - mean) / std, dtype=torch.float32) @ w + b).argmax(1).numpy()
            for x in xs
        ]


def macro_f(gold: numpy.ndarray, pred: numpy.ndarray, n: int) -> float:
    fs = []
    for c in range(n):
        tp = int(((gold == c) & (pred == c)).sum())
        fp = int(((gold != c) & (pred == c)).sum())
        fn = int(((gold == c) & (pred != c)).sum())
        fs.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(fs) / n


def load_set(name: str) -> Tuple[List[str], Dict[str, Tuple[List[str], numpy.ndarray]]]:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    splits: Dict[str, Tuple[List[str], List[str]]] = {}
    for part in ("train", "dev", "test"):
        path = ROOT / "corpus" / "splits" / f"{name}_{part}.spacy"
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        splits[part] = ([d.text for d in docs], [max(d.cats, key=d.cats.get) for d in docs])
    labels = sorted({y for _, ys in splits.values() for y in ys})
    return labels, {
        p: (texts, numpy.array([labels.index(y) for y in ys])) for p, (texts, ys) in splits.items()
    }


def set_states(
    folder: Path, name: str, splits: Dict[str, Tuple[List[str], numpy.ndarray]],
    cache: Optional[Path],
) -> Dict[str, numpy.ndarray]:  # fmt: skip
    """Each split's pooled states, from ``cache/<name>.npz`` when it holds them."""
    path = None if cache is None else cache / f"{name}.npz"
    if path is not None and path.exists():
        with numpy.load(path) as saved:
            return {p: saved[p] for p in splits}
    start = time.perf_counter()
    states = {p: pooled_states(folder, texts) for p, (texts, _) in splits.items()}
    print(f"{name}: states in {time.perf_counter() - start:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        numpy.savez(path, **states)
    return states


CONFIG = ROOT / "configs" / "train_listener_textcat.cfg"
LAYER = "components.transformer.model.layer"
# layers every model has: a shipped default must not break when the model block is swapped
PORTABLE = ("-1", '"mix"')
NORM = "components.transformer.model.normalize"
LR = "training.optimizer.learn_rate"
EPOCHS = "training.max_epochs"
LAST = "components.textcat.model.use_reduce_last"


def setting(
    layer: str, lr: str, epochs: str, last: str = "false", normalize: str = "false"
) -> Dict[str, str]:  # fmt: skip
    """Overrides of the shipped config: every key the grid varies, so any entry can be
    compared with the shipped file whatever its defaults are. ``normalize = false`` is
    TransformerModel.v1's behaviour; at the last layer both give the same states."""
    return {LAYER: layer, NORM: normalize, LR: lr, EPOCHS: epochs, LAST: last}


# The shipped config before issue 26 item 18 tuned it (layer -1 had been chosen by the probe).
BEFORE = ("before", setting("-1", "0.001", "15"))
# The listener grid, the earlier entry first on ties: (name, overrides of the shipped config).
# First learning rate x epochs at the last layer with mean pooling; then, at 0.001 x 30: a
# learned mix of all layers (raw and normalised), mean + last-token pooling (a decoder's
# last pieces have read the whole text), layer 20 (the default before layer -1) and layer
# 28 (the probe's best mean dev), each raw and normalised.
GRID: List[Tuple[str, Dict[str, str]]] = [
    BEFORE,
    ("lr0.001-ep30", setting("-1", "0.001", "30")),
    ("lr0.003-ep15", setting("-1", "0.003", "15")),
    ("lr0.003-ep30", setting("-1", "0.003", "30")),
    ("lr0.01-ep15", setting("-1", "0.01", "15")),
    ("lr0.01-ep30", setting("-1", "0.01", "30")),
    ("mix-lr0.001-ep30", setting('"mix"', "0.001", "30")),
    ("mixnorm-lr0.001-ep30", setting('"mix"', "0.001", "30", normalize="true")),
    ("meanlast-lr0.001-ep30", setting("-1", "0.001", "30", last="true")),
    ("layer20-lr0.001-ep30", setting("20", "0.001", "30")),
    ("layer20norm-lr0.001-ep30", setting("20", "0.001", "30", normalize="true")),
    ("layer28-lr0.001-ep30", setting("28", "0.001", "30")),
    ("layer28norm-lr0.001-ep30", setting("28", "0.001", "30", normalize="true")),
]


def train_listener(
    runs: Path, name: str, dataset: str, overrides: Dict[str, str]
) -> Path:  # fmt: skip
    """``spacy train`` of the shipped listener config with ``overrides`` on ``dataset``'s
    train half, model-best chosen on its dev half; a finished run in ``runs`` is reused."""
    out = runs / f"{name}-{dataset}"
    if not (out / "model-best" / "meta.json").exists():
        split = ROOT / "corpus" / "splits"
        command = [
            sys.executable, "-m", "spacy", "train", str(CONFIG), "-o", str(out),
            "--paths.train", str(split / f"{dataset}_train.spacy"),
            "--paths.dev", str(split / f"{dataset}_dev.spacy"),
        ]  # fmt: skip
        for key, value in overrides.items():
            command += [f"--{key}", value]
        start = time.perf_counter()
        with open(runs / f"{name}-{dataset}.log", "w", encoding="utf8") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"{name} {dataset}: trained in {time.perf_counter() - start:.0f} s")
    return out / "model-best"


def dev_score(model: Path) -> float:
    """The dev macro F that ``spacy train`` recorded for model-best."""
    meta = json.loads((model / "meta.json").read_text(encoding="utf8"))
    return float(meta["performance"]["cats_macro_f"])


def listener_vs_probe(
    model: Path, labels: List[str], splits: Dict[str, Tuple[List[str], numpy.ndarray]]
) -> Tuple[float, float]:  # fmt: skip
    """Test macro F of the trained listener, and of a linear probe (as above: standardised,
    L2 chosen on dev) on the listener's own pooled features (the textcat's input)."""
    import spacy

    nlp = spacy.load(model)
    textcat = nlp.get_pipe("textcat")
    feats, preds = {}, {}
    for part, (texts, _) in splits.items():
        docs = list(nlp.pipe(texts))
        preds[part] = numpy.array([labels.index(max(d.cats, key=d.cats.get)) for d in docs])
        feats[part] = numpy.asarray(textcat.model.layers[0].predict(docs))
    y = {p: ys for p, (_, ys) in splits.items()}
    listener = macro_f(y["test"], preds["test"], len(labels))
    best = (-1.0, 0.0)
    for l2 in L2:
        dev, test = fit_predict(
            feats["train"], y["train"], [feats["dev"], feats["test"]], len(labels), l2
        )
        f_dev = macro_f(y["dev"], dev, len(labels))
        if f_dev > best[0]:
            best = (f_dev, macro_f(y["test"], test, len(labels)))
    return listener, best[1]


def listener_report(runs: Path) -> List[str]:
    """Train the grid on every set, choose on the mean dev macro F, report the test halves
    of the chosen setting (and of the config before) against the probe on its features."""
    dev: Dict[str, Dict[str, float]] = {}
    for name, overrides in GRID:
        dev[name] = {s: dev_score(train_listener(runs, name, s, overrides)) for s in SETS}
    mean = {name: sum(dev[name].values()) / len(SETS) for name, _ in GRID}
    portable = [name for name, o in GRID if o.get(LAYER, "-1") in PORTABLE]
    chosen = max(portable, key=lambda n: mean[n])  # first on ties
    lines = [
        "",
        "## The listener: settings chosen on the dev halves",
        "",
        "`spacy train configs/train_listener_textcat.cfg` with the overrides below, model-best "
        "on dev (the dev macro F `spacy train` recorded for it, %). The shipped config is "
        "also the template for other models (one line swaps the weights), so only a layer "
        "that exists in every model can be its default: -1 or \"mix\". Rows with a fixed "
        "middle layer are measured for reference and not chosen. Chosen on the mean over "
        f"the sets: **{chosen}**.",
        "",
        "Columns: `layer`, `normalize` ([components.transformer.model]), `learn_rate`, "
        "`max_epochs` ([training]), `use_reduce_last` ([components.textcat.model]; mean "
        "pooling is always on).",
        "",
        "| setting | " + " | ".join(k.rsplit(".", 1)[-1] for k in GRID[0][1]) + " | "
        + " | ".join(f"{s} dev" for s in SETS) + " | mean dev |",
        "| --- | " + " | ".join("---" for _ in GRID[0][1]) + " | "
        + " | ".join("---:" for _ in SETS) + " | ---: |",
    ]  # fmt: skip
    for name, overrides in GRID:
        mark = "**" if name == chosen else ""
        args = " | ".join(overrides.get(k, "") for k in GRID[0][1])
        cells = " | ".join(f"{100 * dev[name][s]:.1f}" for s in SETS)
        lines.append(f"| {mark}{name}{mark} | {args} | {cells} | {100 * mean[name]:.1f} |")
    lines += [
        "",
        "## Listener vs linear probe on its own features, test halves (macro F, %)",
        "",
        "The probe: the textcat's own input (the listener's pooled features of the trained "
        "model), standardised on train, logistic regression with L2 chosen on dev.",
        "",
        "| set | " + " | ".join(
            f"{n} listener | {n} probe" for n in (chosen, BEFORE[0])
        ) + " |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    settings = dict(GRID)
    for s in SETS:
        labels, splits = load_set(s)
        cells = []
        for name, overrides in ((chosen, settings[chosen]), BEFORE):
            listener, probe = listener_vs_probe(
                train_listener(runs, name, s, overrides), labels, splits
            )
            cells.append(f"{100 * listener:.1f} | {100 * probe:.1f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def machine() -> str:
    """The CPU, its AVX-512 flags, the cores, the load and this process's niceness."""
    info = Path("/proc/cpuinfo")
    text = info.read_text(encoding="utf8") if info.exists() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    flags = sorted(set(re.findall(r"avx512[a-z_]*", text)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{names[0] if names else 'unknown CPU'} ({', '.join(flags) or 'no AVX-512'}), "
        f"{os.cpu_count()} cores, load average {load:.1f} at the start, nice {os.nice(0)}"
    )


def main() -> None:
    from benchmarks.features import smollm2_folder

    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "LAYERS.md")
    parser.add_argument("--states", type=Path, default=None, help="cache folder for states")
    parser.add_argument("--runs", type=Path, default=None, help="listener runs (reused)")
    parser.add_argument("--no-listener", action="store_true", help="the probe table only")
    args = parser.parse_args()
    folder = smollm2_folder()
    host = machine()
    results: Dict[str, List[Tuple[float, float]]] = {}
    sizes = {}
    for name in SETS:
        labels, splits = load_set(name)
        states = set_states(folder, name, splits, args.states)
        y = {p: ys for p, (_, ys) in splits.items()}
        sizes[name] = {p: len(ys) for p, ys in y.items()}
        rows = []
        for layer in range(states["train"].shape[0]):
            best = (-1.0, 0.0)
            for l2 in L2:
                dev, test = fit_predict(
                    states["train"][layer], y["train"],
                    [states["dev"][layer], states["test"][layer]], len(labels), l2,
                )  # fmt: skip
                f_dev = macro_f(y["dev"], dev, len(labels))
                if f_dev > best[0]:
                    best = (f_dev, macro_f(y["test"], test, len(labels)))
            rows.append(best)
        results[name] = rows
    n_layers = len(results["gold"])
    mean_dev = [sum(results[s][k][0] for s in SETS) / len(SETS) for k in range(n_layers)]
    chosen = max(range(n_layers), key=lambda k: (mean_dev[k], k))
    lines = [
        "# A linear probe per layer of SmolLM2-135M's frozen features",
        "",
        "Generated by `OMP_NUM_THREADS=1 nice -n 19 python benchmarks/listener_layers.py`. Do "
        "not edit by hand. Mean-pooled "
        "hidden states of each layer (0 = embeddings, 30 = last), a logistic regression fit "
        "on train with its L2 strength chosen on dev; macro F in %. Sizes: "
        + "; ".join(f"{s} {sizes[s]}" for s in SETS)
        + ". The sets are small (the unseen dev half has 7 docs): differences of a few "
        "points between neighbouring layers are noise.",
        "",
        f"Machine: {host}; `OMP_NUM_THREADS=1`, other users' jobs running at the same time "
        "(only quality is measured here, no speed).",
        "",
        f"Chosen on the mean dev macro F of the {len(SETS)} sets: **layer {chosen}** "
        f"(-1 = {n_layers - 1} is the last).",
        "",
        "| layer | " + " | ".join(f"{s} dev | {s} test" for s in SETS) + " | mean dev |",
        "| ---: | " + " | ".join("---: | ---:" for _ in SETS) + " | ---: |",
    ]
    for k in range(n_layers):
        mark = "**" if k == chosen else ""
        cells = " | ".join(
            f"{100 * results[s][k][0]:.1f} | {100 * results[s][k][1]:.1f}" for s in SETS
        )
        lines.append(f"| {mark}{k}{mark} | {cells} | {100 * mean_dev[k]:.1f} |")
    if not args.no_listener:
        if args.runs is None:
            with tempfile.TemporaryDirectory() as tmp:
                lines += listener_report(Path(tmp))
        else:
            args.runs.mkdir(parents=True, exist_ok=True)
            lines += listener_report(args.runs)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
