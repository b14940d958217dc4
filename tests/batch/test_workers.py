"""``annotate --n-process N``: its forked workers exit when the parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import psutil

from spacy_llama.batch.parent_watch import watch_parent

from ..fixtures.corpus_files import corpus, write_jsonl
from ..fixtures.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]


def _workers(parent: psutil.Process) -> List[psutil.Process]:
    """spaCy's forked workers (they share the parent's command line; the resource tracker
    multiprocessing may start does not)."""
    found = []
    for child in parent.children(recursive=True):
        try:
            if "annotate" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_kill_9_of_the_parent_ends_its_workers(tmp_path: Path, tiny_hf: Path) -> None:
    """Before, the two workers stayed, each waiting on a queue nobody would write again."""
    config = write_config(tmp_path, tiny_hf, max_new_tokens=8, batch_size=4)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(2000))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "spacy_llama", "annotate", str(config), str(inp), str(out),
           "--n-process", "2", "--batch-size", "4", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    workers: List[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            workers = _workers(parent)
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()!r}"
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert alive == [] and len(gone) == 2
    finally:
        for p in workers:  # only the processes this test started
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_watch_parent_terminates_once_the_parent_changes() -> None:
    """The portable fallback: an orphan is re-parented, so its parent pid changes."""
    parents = iter([41, 41, 41, 1])
    naps: List[float] = []
    ended: List[bool] = []
    watch_parent(
        41,
        interval=0.5,
        getppid=lambda: next(parents),
        terminate=lambda: ended.append(True),
        sleep=naps.append,
    )
    assert naps == [0.5, 0.5, 0.5] and ended == [True]
