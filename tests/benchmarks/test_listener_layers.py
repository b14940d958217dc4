"""benchmarks/listener_layers.py: the probe's arithmetic, the listener grid's choice (on the
dev halves only, first setting on ties) and the shipped listener config being that choice."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, List

import numpy
from spacy.util import load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import listener_layers  # noqa: E402


def test_probe_separates_separable_classes_and_macro_f_counts_per_class() -> None:
    rng = numpy.random.default_rng(0)
    y = numpy.repeat(numpy.arange(3), 20)
    # one informative dimension on a huge offset (as a LLaMA's massive activation), noise
    x = rng.normal(size=(60, 8)).astype("f")
    x[:, 3] = 1000.0 + 5.0 * y
    (pred,) = listener_layers.fit_predict(x, y, [x], 3, 1e-3)
    assert listener_layers.macro_f(y, pred, 3) == 1.0
    # a classifier that always says 0: F 0.5 for class 0 (p 1/3, r 1), 0 for the others
    assert abs(listener_layers.macro_f(y, numpy.zeros_like(y), 3) - 0.5 / 3) < 1e-9


def test_listener_report_chooses_on_dev_and_reports_test(monkeypatch, tmp_path) -> None:
    middle = {listener_layers.LAYER: "28"}
    grid = [("a", {"x": "1"}), ("b", {"x": "2"}), ("c", {"x": "3"}), ("m", middle)]
    # b and c tie: the first (b) wins; m is better but its layer is not in every model
    dev = {"a": 0.80, "b": 0.90, "c": 0.90, "m": 0.95}
    monkeypatch.setattr(listener_layers, "GRID", grid)
    monkeypatch.setattr(listener_layers, "BEFORE", ("old", {"x": "0"}))
    trained: List[str] = []

    def fake_train(runs: Path, name: str, dataset: str, overrides: Dict[str, str]) -> Path:
        trained.append(f"{name}-{dataset}")
        return runs / name

    monkeypatch.setattr(listener_layers, "train_listener", fake_train)
    monkeypatch.setattr(listener_layers, "dev_score", lambda model: dev[model.name])
    monkeypatch.setattr(listener_layers, "load_set", lambda name: (["p", "q"], {}))
    tested: List[str] = []

    def fake_vs(model: Path, labels, splits):
        tested.append(model.name)
        return (0.5, 0.25) if model.name == "b" else (0.1, 0.2)

    monkeypatch.setattr(listener_layers, "listener_vs_probe", fake_vs)
    lines = listener_layers.listener_report(tmp_path)
    text = "\n".join(lines)
    assert "the sets: **b**" in text
    assert "| **b** | 2 | 90.0 | 90.0 | 90.0 | 90.0 |" in text
    assert "| m |  | 95.0 | 95.0 | 95.0 | 95.0 |" in text  # reported, not chosen
    assert set(tested) == {"b", "old"}  # test halves only for the chosen and the old config
    for name in listener_layers.SETS:
        assert f"| {name} | 50.0 | 25.0 | 10.0 | 20.0 |" in text


def test_shipped_listener_config_is_the_setting_layers_md_chose() -> None:
    text = (ROOT / "benchmarks" / "LAYERS.md").read_text(encoding="utf8")
    found = re.search(r"chosen on the mean over the sets: \*\*([^*]+)\*\*", text, re.I)
    assert found, "LAYERS.md has no listener choice"
    overrides = dict(listener_layers.GRID)[found.group(1)]
    assert overrides, "the chosen setting changes nothing"
    config = load_config(ROOT / "configs" / "train_listener_textcat.cfg")
    for key, value in overrides.items():
        node = config
        for part in key.split("."):
            node = node[part]
        if key == listener_layers.NORM and overrides[listener_layers.LAYER] == "-1":
            continue  # the last layer's states are the same either way (test_normalize.py)
        assert node == json.loads(value), key
