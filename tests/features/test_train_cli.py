"""``python -m spacy train`` of configs/train_listener_textcat.cfg with the tiny random model
in place of SmolLM2 (config overrides): the textcat loss the trainer logs goes down, and the
saved pipeline loads and classifies; also with freeze = false and a LoRA adapter block."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import spacy
from spacy.tokens import DocBin

from ..fixtures.helpers import with_model_block
from .builders import TEXTS

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s", re.M)


def _corpus(path: Path) -> None:
    nlp = spacy.blank("en")
    docs = []
    for i, text in enumerate(TEXTS * 2):
        doc = nlp.make_doc(text)
        doc.cats = {"first": float(i % 2 == 0), "second": float(i % 2 == 1)}
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)


def _textcat_losses(log: str) -> List[float]:
    """The LOSS TEXTCAT column of the trainer's table, after step 0."""
    return [float(m.group(4)) for m in ROW.finditer(log) if int(m.group(2)) > 0]


def _train(tiny_hf: Path, tmp_path: Path, config: Path) -> Path:
    """``spacy train`` of ``config`` on the tiny model: checks the loss went down; returns
    the folder of model-last."""
    _corpus(tmp_path / "train.spacy")
    _corpus(tmp_path / "dev.spacy")
    code = tmp_path / "register.py"  # the entry point is not installed in the test venv
    code.write_text("import spacy_llama.features.model  # noqa: F401\n")
    out = tmp_path / "out"
    tiny = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf)}
    config = with_model_block(
        config, "components.transformer.model.model", tiny, tmp_path / "tiny.cfg"
    )
    cmd = [
        sys.executable, "-m", "spacy", "train", str(config),
        "--paths.train", str(tmp_path / "train.spacy"),
        "--paths.dev", str(tmp_path / "dev.spacy"),
        "-o", str(out), "--code", str(code),
        "--components.transformer.model.layer", "-1",
        "--training.max_epochs", "12",
        "--training.eval_frequency", "2",
        "--training.dropout", "0.0",
        "--training.optimizer.learn_rate", "0.01",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    losses = _textcat_losses(proc.stdout)
    assert len(losses) >= 3, proc.stdout[-2000:]
    assert losses[-1] < losses[0], losses
    trained = spacy.load(out / "model-last")
    assert set(trained(TEXTS[0]).cats) == {"first", "second"}
    return out / "model-last"


def test_spacy_train_of_a_listener_textcat_lowers_the_loss(tiny_hf, tmp_path) -> None:
    model = _train(tiny_hf, tmp_path, ROOT / "configs" / "train_listener_textcat.cfg")
    assert not any(model.rglob("*.safetensors"))


def test_spacy_train_with_lora_features_saves_the_adapter(tiny_hf, tmp_path) -> None:
    text = (ROOT / "configs" / "train_listener_textcat.cfg").read_text(encoding="utf8")
    assert "\nfreeze = true\n" in text
    text = text.replace("\nfreeze = true\n", "\nfreeze = false\n", 1)
    assert "\nadapter = null\n" in text  # a full config: the block replaces the setting
    text = text.replace("\nadapter = null\n", "\n", 1)
    text += '\n[components.transformer.model.adapter]\n@llama_adapters = "spacy-llama.LoRA.v1"\n'
    config = tmp_path / "lora.cfg"
    config.write_text(text + "r = 4\nalpha = 8\n", encoding="utf8")
    model = _train(tiny_hf, tmp_path, config)
    trf = spacy.load(model).get_pipe("transformer").model
    lora_b = [p for n, p in trf.adapter.peft.named_parameters() if ".lora_B." in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the trained adapter came back
