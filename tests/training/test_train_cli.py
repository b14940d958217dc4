"""``python -m spacy train`` on the shipped training config, with a tiny random model in
place of SmolLM2, for two epochs: the trained pipeline's loss is lower. The data's labels
are not the gold set's: the shipped config takes its labels from the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from ..fixtures.helpers import with_model_block
from .builders import TEXTS

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["happy", "sad", "neutral"]  # not the gold set's (issue 21: E506 before)


def _corpus(path: Path) -> list:
    nlp = spacy.blank("en")
    docs = []
    for i, text in enumerate(TEXTS):
        doc = nlp.make_doc(text)
        doc.cats = {label: float(j == i % 2) for j, label in enumerate(LABELS)}
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)
    return docs


def test_spacy_train_fine_tunes_textcat_and_lowers_the_loss(tiny_hf, tmp_path) -> None:
    docs = _corpus(tmp_path / "train.spacy")
    _corpus(tmp_path / "dev.spacy")
    out = tmp_path / "out"
    tiny = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    config = with_model_block(
        ROOT / "configs" / "train_textcat.cfg", "components.llama.model", tiny, tmp_path / "c.cfg"
    )
    cmd = [
        sys.executable, "-m", "spacy", "train", str(config),
        "--paths.train", str(tmp_path / "train.spacy"),
        "--paths.dev", str(tmp_path / "dev.spacy"),
        "-o", str(out),
        "--components.llama.adapter.r", "4",
        "--training.max_epochs", "2",
        "--training.eval_frequency", "2",
        "--training.optimizer.learn_rate", "0.01",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    saved = out / "model-last" / "llama" / "adapter" / "adapter_model.safetensors"
    assert saved.exists()
    trained = spacy.load(out / "model-last").get_pipe("llama")
    assert trained.labels == tuple(sorted(LABELS))  # from the data, saved with the pipeline
    # The same pipeline from its config alone: untrained adapters (lora_B = 0).
    config = spacy.util.load_config(out / "model-last" / "config.cfg")
    task = config["components"]["llama"]["task"]
    task["labels"], task["verbalizers"] = list(trained.labels), {}  # as the trained one has
    fresh = spacy.util.load_model_from_config(config, auto_fill=True).get_pipe("llama")
    egs = [Example(d.copy(), d.copy()) for d in docs]
    assert trained.get_loss(egs)[0] < fresh.get_loss(egs)[0]
    # The project's zero-shot baseline: the same config untrained, with the learned labels
    zero_shot = tmp_path / "zero-shot"
    script = [sys.executable, str(ROOT / "scripts" / "assemble_zero_shot.py")]
    proc = subprocess.run(
        [*script, str(tmp_path / "c.cfg"), str(out / "model-last"), str(zero_shot)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert spacy.load(zero_shot).get_pipe("llama").labels == tuple(sorted(LABELS))
