"""``annotate --batch-size N`` writes every N documents even when the component's own
``batch_size`` is larger, and every model answer reaches the response cache as it finishes,
so a killed batch's answers are reused at resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from spacy_llama.generation.engine import Engine

from ..fixtures.corpus_files import corpus, read_jsonl, run, write_jsonl
from ..fixtures.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_batch_size_smaller_than_the_components_writes_at_that_size(
    tmp_path: Path, tiny_hf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Component batch_size 8, --batch-size 2, 6 docs; the run stops (as a kill would) once
    the model has been asked for a 5th doc. The first 4 docs are on disk. Before, the
    component buffered 8 docs, so nothing had been written."""
    config = write_config(tmp_path, tiny_hf, batch_size=8)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(6))
    out = tmp_path / "out.jsonl"
    seen: List[int] = []
    real = Engine.run_all

    def run_all(self: Engine, requests: Any) -> Any:
        seen.append(len(requests))
        if sum(seen) > 4:
            raise KeyboardInterrupt
        return real(self, requests)

    monkeypatch.setattr(Engine, "run_all", run_all)
    with pytest.raises(KeyboardInterrupt):
        run(config, inp, out, batch_size=2)
    assert seen == [2, 2, 2]
    assert [r["id"] for r in read_jsonl(out)] == ["d0", "d1", "d2", "d3"]


KILLER = """
import os, signal, sys
from spacy_llama.generation import decode_step
real = decode_step.SequenceState.result
finished = []
def result(self, decode):
    if len(finished) == 3:  # kill -9 while the 4th answer of the batch comes out
        os.kill(os.getpid(), signal.SIGKILL)
    finished.append(self.index)
    return real(self, decode)
decode_step.SequenceState.result = result
from spacy_llama.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_answers_of_a_killed_batch_are_cached_and_reused(tmp_path: Path, tiny_hf: Path) -> None:
    config = write_config(tmp_path, tiny_hf, batch_size=8, max_new_tokens=4)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(8))
    out = tmp_path / "out.jsonl"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(script), "annotate", str(config), str(inp), str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists() or read_jsonl(out) == []  # the batch of 8 was never written
    summary = run(config, inp, out, resume=True)
    assert summary.done == 8
    assert summary.cache_hits == 3  # the three answers finished before the kill
    assert summary.model_calls == 5


def test_scoring_tasks_count_model_calls_and_scored_tokens(tiny_hf: Path) -> None:
    """A scoring task (Surprisal here) generates nothing; the summary said "0 model calls,
    0.0 tokens/s". The engine counts its requests and the tokens it scored."""
    import spacy

    from spacy_llama.batch.summary import Summary

    nlp = spacy.blank("en")
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    task = {"@llama_tasks": "spacy-llama.Surprisal.v1"}
    nlp.add_pipe("llama", config={"model": model, "task": task})
    docs = list(nlp.pipe(["The cat sat.", "A dog ran far away."]))
    stats = nlp.get_pipe("llama").engine.stats
    assert stats.model_calls == 2
    assert stats.scored_tokens >= sum(len(d) for d in docs)
    summary = Summary(done=2, seconds=2.0, load_seconds=1.0, model_calls=2, scored_tokens=40)
    line = summary.line()
    assert "40.0 scored tokens/s" in line and "2 model calls" in line
    assert "0.0 tokens/s" not in line
