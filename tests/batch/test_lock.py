"""One writer per output: a second ``annotate`` (local or ``--ray``) or ``merge`` on an
output another run holds stops at once, naming the holder, before any model is loaded; a
holder killed with ``kill -9`` (even one whose forked workers live on) blocks nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, List

import pytest

from spacy_llama.batch.lock import OutputLock, lock_path
from spacy_llama.cli import main
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        assert lock_path(out).exists()
        with pytest.raises(RunStateError) as info:
            OutputLock(out).acquire()  # flock: a second open file conflicts, even in-process
        message = str(info.value)
        assert (
            "[E060]" in message and f"pid {os.getpid()} on host {socket.gethostname()}" in message
        )
        assert str(out) in message
    assert not lock_path(out).exists()
    with OutputLock(out):  # released: the next run takes it
        pass


HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from spacy_llama.batch.lock import OutputLock

    lock = OutputLock(Path(sys.argv[1]))
    lock.acquire()
    child = os.fork()  # like spaCy's --n-process workers: they inherit the descriptors
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
    time.sleep(600)
    """
)


def test_lock_of_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    child = int(holder.stdout.readline())  # type: ignore[union-attr]
    try:
        with pytest.raises(RunStateError, match=f"pid {holder.pid} "):
            OutputLock(out).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        # The forked child is still alive; it must not keep the lock of its dead parent.
        assert _alive(child)
        with OutputLock(out):
            pass
    finally:
        for pid in (holder.pid, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        holder.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- annotate ----------------------------------------------------------------------------
# A real annotate run that stops after its first durable batch and waits there (holding its
# lock, as a long run would), so the test needs no timing.
PAUSED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spacy_llama.batch import local
    from spacy_llama.cli import main

    ready = Path(sys.argv[1])
    write_batch = local.LocalRun._write_batch

    def write_then_wait(self, batch):
        write_batch(self, batch)
        ready.write_text("one batch written")
        while True:
            time.sleep(1)

    local.LocalRun._write_batch = write_then_wait
    sys.exit(main(sys.argv[2:]))
    """
)


def test_second_annotate_fails_fast_naming_the_first(
    tmp_path: Path, tiny_hf: Path, capsys: Any
) -> None:
    config = write_config(tmp_path, tiny_hf, batch_size=4)
    # A model that does not exist: had the second run loaded one, it would say so instead.
    no_model = write_config(tmp_path, tmp_path / "no-such-model", name="no_model.cfg")
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(12))
    out, ready = tmp_path / "out.jsonl", tmp_path / "ready"
    args = ["annotate", str(config), str(inp), str(out), "--batch-size", "4", "--quiet"]
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(ready), *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(ready, first)
        written = out.read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "spacy_llama", "annotate", str(no_model), *args[2:], "--resume"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr
        assert "[E060]" in second.stderr and f"pid {first.pid} on host" in second.stderr
        assert "Traceback" not in second.stderr and "Could not build" not in second.stderr
        _refused_in_process(capsys, [*args, "--overwrite"], first.pid)
        _refused_in_process(
            capsys, ["annotate", str(no_model), *args[2:], "--resume", "--ray"], first.pid
        )
        _refused_in_process(
            capsys, ["merge", str(out), str(tmp_path / "shard.jsonl"), "--overwrite"], first.pid
        )
        assert out.read_bytes() == written  # no refused run wrote a byte
        assert first.poll() is None  # it held the lock all along
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert main([*args, "--resume"]) == 0  # the killed run's lock blocks nothing
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(f"d{i}" for i in range(12))  # each once


def _wait_for(ready: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the first run never wrote a batch"
        time.sleep(0.05)


def _refused_in_process(capsys: Any, argv: List[str], holder: int) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "[E060]" in err and f"pid {holder} on host" in err, err
    assert "Traceback" not in err
