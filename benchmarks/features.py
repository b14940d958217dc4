"""Feature extraction speed and memory: spacy-llama.TransformerModel.v1 against a plain
transformers forward loop on the same model and batch, and against spacy-transformers' own
TransformerModel.v3 on the same HF folder (where it runs at all).

    python benchmarks/features.py [--model PATH] [--docs 232] [--batch 16] [--threads 1]

``--model``: an HF folder (default: the SmolLM2-135M conversion of the embedded GGUF, as
spacy-llama.SmolLM2.v1 caches it). Docs: the gold split's texts, repeated. Each system runs
in a child process of its own (its peak RSS is its own, read from getrusage); the first
batch is a warm-up, not timed. A system that fails reports the exception it stopped at.
Also reported: how far one doc's features move when it is batched with others (the pieces
its tokens align to; for the plain loop, its unpadded pieces): ours is 0 by construction,
the others pad on the tokenizer's side (SmolLM2: left) and give no position ids.
These runs turn the frozen-feature cache off (the texts repeat).

``--epochs E`` also times E training epochs of a frozen listener textcat (the settings of
configs/train_listener_textcat.cfg's feature model; the gold train half, a dev evaluation on
the gold dev half after each epoch) in this process, once with the feature cache off and
once on (features/cache.py: each span's states computed once), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SYSTEMS = ("plain", "spacy-llama", "spacy-transformers")


def smollm2_folder() -> Path:
    from spacy_llama.models.default import smollm2_gguf_path
    from spacy_llama.models.gguf import converted_folder, ensure_converted

    gguf = smollm2_gguf_path()
    return ensure_converted(gguf, converted_folder(gguf))


def gold_texts(n: int) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    texts = []
    for part in ("train", "dev", "test"):
        path = ROOT / "corpus" / "splits" / f"gold_{part}.spacy"
        texts += [d.text for d in DocBin().from_disk(path).get_docs(nlp.vocab)]
    return [texts[i % len(texts)] for i in range(n)]


def plain_loop(folder: Path) -> Callable[[List[str]], List[Any]]:
    """transformers as a user writes it: pad the batch (the tokenizer's side), one forward."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()

    def run(texts: List[str]) -> List[Any]:
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            states = model(**enc).last_hidden_state
        return [states[i][enc["attention_mask"][i].bool()].numpy() for i in range(len(texts))]

    return run


def spacy_llama_loop(folder: Path) -> Callable[[List[str]], List[Any]]:
    import spacy

    import spacy_llama.features.model  # noqa: F401

    nlp = spacy.blank("en")
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(folder), "device": "cpu",
             "dtype": "float32"}  # fmt: skip
    arch = {"@architectures": "spacy-llama.TransformerModel.v1", "layer": -1, "model": model,
            "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1",
                          "window": 128, "stride": 96}}  # fmt: skip
    trf = nlp.add_pipe("transformer", config={"model": arch})
    nlp.initialize()
    return _pipe_runner(nlp, trf)


def spacy_transformers_loop(folder: Path) -> Callable[[List[str]], List[Any]]:
    import spacy

    nlp = spacy.blank("en")
    arch = {"@architectures": "spacy-transformers.TransformerModel.v3", "name": str(folder),
            "tokenizer_config": {"use_fast": True}}  # fmt: skip
    trf = nlp.add_pipe("transformer", config={"model": arch})
    nlp.initialize()
    return _pipe_runner(nlp, trf)


def _pipe_runner(nlp: Any, trf: Any) -> Callable[[List[str]], List[Any]]:
    """Per doc, the rows of its pieces that its tokens align to (the listener's input)."""

    def run(texts: List[str]) -> List[Any]:
        out = trf.predict([nlp.make_doc(t) for t in texts])
        result = []
        for data in out.doc_data:
            states = data.model_output.last_hidden_state
            result.append(states.reshape(-1, states.shape[-1])[data.align.dataXd])
        return result

    return run


LOOPS = {"plain": plain_loop, "spacy-llama": spacy_llama_loop,
         "spacy-transformers": spacy_transformers_loop}  # fmt: skip


def child(system: str, folder: Path, docs: int, batch: int) -> Dict[str, Any]:
    """Run one system; a failure is reported with the exception it stopped at."""
    import numpy

    texts = gold_texts(docs)
    try:
        run = LOOPS[system](folder)
        run(texts[:batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            run(texts[i : i + batch])
        seconds = time.perf_counter() - start
        alone = run(texts[1:2])[0]
        batched = run(texts[:batch])[1]  # the same doc, padded in a batch
        drift = float(numpy.abs(alone - batched[: len(alone)]).max())
        result: Dict[str, Any] = {"docs_per_s": len(texts) / seconds, "drift": drift}
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        result = {
            "error": f"{type(e).__name__}: {str(e)[:300]} (at {where.filename}:{where.lineno})"
        }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--docs", type=int, default=232)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=SYSTEMS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=0, help="also time cached epochs")
    parser.add_argument("--skip-systems", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.model or smollm2_folder()
    if args.only:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.only, folder, args.docs, args.batch)))
        return 0
    print(f"model {folder}, {args.docs} docs, batch {args.batch}, {args.threads} thread(s)")
    if not args.skip_systems:
        systems(args, folder)
    if args.epochs:
        epochs_report(folder, args.epochs, args.threads)
    return 0


def systems(args: argparse.Namespace, folder: Path) -> None:
    rows = {}
    for system in SYSTEMS:
        cmd = [sys.executable, __file__, "--only", system, "--model", str(folder),
               "--docs", str(args.docs), "--batch", str(args.batch),
               "--threads", str(args.threads)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads),
               "SPACY_LLAMA_FEATURE_CACHE_MB": "0"}  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        rows[system] = json.loads(lines[-1]) if lines else {"error": proc.stderr[-300:]}
    report(rows)


LISTENER = """
[nlp]
lang = "en"
pipeline = ["transformer","textcat"]

[components]

[components.transformer]
factory = "transformer"

[components.transformer.model]
@architectures = "spacy-llama.TransformerModel.v1"
layer = 20
freeze = true

[components.transformer.model.model]
@llama_models = "spacy-llama.HF.v1"
path = null
device = "cpu"
dtype = "float32"

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 128
stride = 96

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


def run_epochs(folder: Path, epochs: int) -> Dict[str, Any]:
    """``epochs`` epochs of updates over the gold train half, each followed by a dev
    evaluation on the gold dev half; seconds and the last dev macro F."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example
    from thinc.api import Config

    import spacy_llama.features.model  # noqa: F401  (registers the architecture)
    from spacy_llama.models.loading import clear_loaded_models

    clear_loaded_models()
    config = Config().from_str(LISTENER)
    config["components"]["transformer"]["model"]["model"]["path"] = str(folder)
    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    config["components"]["transformer"]["model"]["layer"] = min(20, layers)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)

    def read(part: str) -> List[Any]:
        path = ROOT / "corpus" / "splits" / f"gold_{part}.spacy"
        gold = DocBin().from_disk(path).get_docs(nlp.vocab)
        return [Example(nlp.make_doc(d.text), d) for d in gold]

    train, dev = read("train"), read("dev")
    spacy.util.fix_random_seed(0)
    optimizer = nlp.initialize(lambda: train)
    start = time.perf_counter()
    scores: Dict[str, Any] = {}
    for _ in range(epochs):
        for i in range(0, len(train), 8):
            nlp.update(train[i : i + 8], sgd=optimizer, losses={})
        scores = nlp.evaluate(dev)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "dev_macro_f": scores.get("cats_macro_f")}


def epochs_report(folder: Path, epochs: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["SPACY_LLAMA_FEATURE_CACHE_MB"] = "0"
    off = run_epochs(folder, epochs)
    os.environ.pop("SPACY_LLAMA_FEATURE_CACHE_MB")
    on = run_epochs(folder, epochs)
    print(f"\n{epochs} epochs of a frozen listener textcat (gold train 44 docs, dev 17 docs "
          f"evaluated after each epoch), {threads} thread(s):")
    print("| feature cache | seconds | dev macro F |")
    print("| --- | ---: | ---: |")
    for name, row in (("off", off), ("on", on)):
        print(f"| {name} | {row['seconds']:.1f} | {row['dev_macro_f']:.4f} |")
    print(f"speed-up: {off['seconds'] / on['seconds']:.2f}x (the same dev macro F: "
          f"{off['dev_macro_f'] == on['dev_macro_f']})")


def report(rows: Dict[str, Dict[str, Any]]) -> None:
    base = rows["plain"].get("docs_per_s")
    print("| system | docs/s | vs plain | peak RSS (MB) | max |diff| of one doc alone vs batched |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for system, row in rows.items():
        if "error" in row:
            print(f"| {system} | failed: {row['error']} | | {row['peak_rss_mb']:.0f} | |")
            continue
        ratio = f"{row['docs_per_s'] / base:.2f}" if base else "-"
        print(f"| {system} | {row['docs_per_s']:.1f} | {ratio} | {row['peak_rss_mb']:.0f} | "
              f"{row['drift']:.3g} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
