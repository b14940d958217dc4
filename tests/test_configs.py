"""Every config in configs/ is shipped full (as ``spacy init fill-config`` writes it), so
spaCy's own tools accept it: ``spacy debug config`` and ``spacy debug data`` pass on each
one. Before, both stopped at "Field required" on every shipped config.

The two commands run in this process (as ``python -m spacy debug ...`` would, through the
same functions), so the model is loaded once per config and command rather than per
interpreter. The inference configs name the gold split as their data, so the commands run
on them as they are; a training config gets data, which for a new pipeline debug data wants
to be at least 100 docs (the gold docs repeated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import spacy
from spacy.cli.debug_config import debug_config
from spacy.cli.debug_data import debug_data
from spacy.tokens import DocBin

from .fixtures.fake_server import FakeServer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.cfg"))
SPLITS = ROOT / "corpus" / "splits"


def _repeated(source: Path, target: Path, n: int = 100) -> Path:
    docs = list(DocBin(store_user_data=True).from_disk(source).get_docs(spacy.blank("en").vocab))
    out = DocBin(store_user_data=True)
    for i in range(n):
        out.add(docs[i % len(docs)])
    out.to_disk(target)
    return target


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("debug-data")
    return {
        "gold_train": _repeated(SPLITS / "gold_train.spacy", folder / "gold_train.spacy"),
        "gold_dev": SPLITS / "gold_dev.spacy",
        "summary_train": _repeated(SPLITS / "summary_train.spacy", folder / "summary.spacy"),
        "summary_dev": SPLITS / "summary_dev.spacy",
    }


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


def _overrides(config: Path, data: Dict[str, Path], server: FakeServer) -> Dict[str, Any]:
    """The training configs get data (a new pipeline needs 100 docs); the others name the
    gold split themselves, relative to the repository."""
    out: Dict[str, Any] = {}
    if config.stem.startswith("train_"):
        kind = "summary" if "summary" in config.stem else "gold"
        out = {"paths.train": str(data[f"{kind}_train"]), "paths.dev": str(data[f"{kind}_dev"])}
    if config.stem == "server":  # a stand-in server; the chat template from the GGUF file
        from spacy_llama.models.default import smollm2_gguf_path

        out.update({"paths.server": server.url, "paths.tokenizer": str(smollm2_gguf_path())})
    return out


def test_every_shipped_config_is_tested() -> None:
    assert len(CONFIGS) >= 14


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_spacy_debug_config_and_debug_data_pass(
    config: Path,
    data: Dict[str, Path],
    server: FakeServer,
    smollm2: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # as the README runs commands
    overrides = _overrides(config, data, server)
    for name, run in (
        ("debug config", lambda: debug_config(config, overrides=overrides)),
        ("debug data", lambda: debug_data(config, config_overrides=overrides, silent=False)),
    ):
        try:
            run()
        except SystemExit as e:  # spaCy's msg.fail(..., exits=1)
            out = capsys.readouterr()
            pytest.fail(f"spacy {name} {config.name} exited {e.code}:\n{out.out[-3000:]}")
    out = capsys.readouterr().out
    assert "Config is valid" in out and "Pipeline can be initialized with data" in out


def test_training_configs_take_labels_from_the_data() -> None:
    """Issue 21: `spacy train configs/train_textcat.cfg` on data with other labels stopped
    with E506; every llama task in a training config leaves `labels` to the data."""
    from spacy.util import load_config

    seen = 0
    for config in (c for c in CONFIGS if c.name.startswith("train_")):
        for component in load_config(config, interpolate=False)["components"].values():
            task = component.get("task") if isinstance(component, dict) else None
            if isinstance(task, dict) and "labels" in task:
                assert task["labels"] == [], config.name
                seen += 1
    assert seen >= 1
