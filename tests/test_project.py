"""project.yml as weasel reads it: every dependency and output is one path, and the
``train`` workflow's commands exist and name their inputs."""

from __future__ import annotations

from pathlib import Path

from weasel.util import load_project_config

ROOT = Path(__file__).resolve().parents[1]


def test_each_dep_and_output_is_one_path() -> None:
    """weasel joins consecutive bare "${vars.x}" entries into "a, b" (a path that never
    exists): a command would then fail on a missing dependency."""
    config = load_project_config(ROOT)
    for cmd in config["commands"]:
        for path in cmd.get("deps", []) + cmd.get("outputs", []):
            assert ", " not in path, (cmd["name"], path)


def test_train_workflow_commands_and_inputs() -> None:
    config = load_project_config(ROOT)
    commands = {c["name"]: c for c in config["commands"]}
    steps = config["workflows"]["train"]
    assert steps == [
        "split-gold", "train-textcat", "evaluate-textcat", "evaluate-zero-shot", "train-report"
    ]  # fmt: skip
    assert "./corpus/splits/gold_train.spacy" in commands["train-textcat"]["deps"]
    for name in steps:  # inputs that are no earlier step's output exist in the repository
        earlier = {o for s in steps[: steps.index(name)] for o in commands[s].get("outputs", [])}
        for dep in commands[name].get("deps", []):
            assert dep in earlier or (ROOT / dep).exists(), (name, dep)
