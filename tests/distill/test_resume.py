"""A distill run killed in any step, run again, goes on from that step: the finished steps
are not redone, and no document is annotated twice."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict

import pytest
import spacy

from spacy_llama.batch.sinks import Outputs
from spacy_llama.cli import main
from spacy_llama.distill import run as distill_run

from .builders import teacher_config, write_gold, write_input

STEPS = ["annotate_corpus", "write_queue", "write_docbin", "train_student", "render_html"]


def spy(monkeypatch, calls: Dict[str, int], name: str, kill: bool = False) -> None:
    """Count calls of ``run.<name>``; with ``kill``, its first call is interrupted (after
    doing its work for the training, so a half-trained student is left behind)."""
    real: Callable[..., Any] = getattr(distill_run, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        if kill and calls[name] == 1:
            if name == "train_student":
                real(*args, **kwargs)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_run, name, wrapped)


@pytest.fixture
def setup(tiny_hf, tmp_path):
    cfg, inp, gold = teacher_config(tmp_path, tiny_hf), write_input(tmp_path), write_gold(tmp_path)
    argv = [str(cfg), str(inp), str(tmp_path / "out"), "--student", "textcat", "--gold", str(gold)]
    return argv + [
        "--max-steps",
        "2",
        "--eval-frequency",
        "1",
        "--curve",
        "",
        "--quiet",
        "--batch-size",
        "2",
    ]


@pytest.mark.parametrize("killed", range(len(STEPS)), ids=STEPS)
def test_a_killed_step_resumes_and_the_finished_ones_are_not_redone(
    setup, tmp_path, killed
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        spy(mp, {}, STEPS[killed], kill=True)
        assert main(["distill", *setup]) == 130
    calls: Dict[str, int] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in STEPS:
            spy(mp, calls, name)
        assert main(["distill", *setup]) == 0
    finished_before = STEPS[:killed]
    for name in finished_before:
        if name == "annotate_corpus" and killed > 0:
            assert calls.get(name, 0) <= 1  # the gold texts' run may be the unfinished one
        else:
            assert calls.get(name, 0) == 0, (name, calls)
    assert calls.get(STEPS[killed], 0) >= 1
    out = tmp_path / "out"
    assert spacy.load(out / "student" / "model-best").pipe_names == ["textcat"]
    assert (out / "report.html").exists()
    # each document annotated once, over both runs
    state = json.loads((out / "distill.json").read_text())["done"]
    assert state["teacher"]["docs"] == 8
    if killed > 0:
        assert state["teacher"]["annotated"] == 8 and state["teacher"]["skipped"] == 0


def test_a_kill_inside_the_teachers_run_keeps_its_finished_batches(setup, tmp_path) -> None:
    real = Outputs.write
    written = []

    def write_then_die(self, items):
        if written:
            raise KeyboardInterrupt
        written.append(len(items))
        return real(self, items)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Outputs, "write", write_then_die)
        assert main(["distill", *setup]) == 130
    assert written == [2]
    assert main(["distill", *setup]) == 0
    state = json.loads((tmp_path / "out" / "distill.json").read_text())["done"]["teacher"]
    assert (state["skipped"], state["annotated"], state["docs"]) == (2, 6, 8)
    ids = [
        json.loads(x)["id"]
        for x in (tmp_path / "out" / "annotations.jsonl").read_text().splitlines()
    ]
    assert sorted(ids) == sorted(f"d{i}" for i in range(8))
