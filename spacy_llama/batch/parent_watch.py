"""Worker processes that exit when the process that forked them dies.

spaCy's ``nlp.pipe(n_process=N)`` forks its workers and feeds them through queues. When the
parent is killed (kill -9, the OOM killer), nothing tells the workers: each holds both ends
of its queues, so it never sees end-of-file and waits for work forever, keeping the model in
memory. A forked child therefore asks Linux to send it SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and, on every platform, a daemon thread checks once a second
that its parent is still the process that forked it (an orphan is re-parented, so
``os.getppid()`` changes). The workers hold no output: the parent writes every record, so
nothing is lost when they go.

Linux sends the death signal when the *thread* that forked exits; spaCy forks from the
thread that calls ``nlp.pipe``, which lives as long as the run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Callable, List, Optional

PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHECK_INTERVAL = 1.0  # seconds between the fallback's checks

_FORKED_FROM: List[int] = []  # the pid of the process that is forking (set just before)


def exit_with_parent_after_fork() -> None:
    """Make every child forked from now on exit when its parent dies."""
    os.register_at_fork(before=_remember_parent, after_in_child=_in_child)


def _remember_parent() -> None:
    _FORKED_FROM[:] = [os.getpid()]


def _in_child() -> None:
    parent = _FORKED_FROM[0] if _FORKED_FROM else None
    if parent is None:  # pragma: no cover - `before` always runs first
        return
    set_death_signal()
    if parent_gone(parent):  # it died before the death signal was set: nobody will send it
        _terminate()
    threading.Thread(
        target=watch_parent, args=(parent,), name="spacy-llama-parent-watch", daemon=True
    ).start()


def set_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux: have the kernel send ``sig`` when the parent (the forking thread) exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return False


def parent_gone(parent: int, getppid: Callable[[], int] = os.getppid) -> bool:
    return getppid() != parent


def watch_parent(
    parent: int,
    *,
    interval: float = CHECK_INTERVAL,
    getppid: Callable[[], int] = os.getppid,
    terminate: Optional[Callable[[], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll until the parent is gone, then terminate this process."""
    while not parent_gone(parent, getppid):
        sleep(interval)
    (terminate or _terminate)()


def _terminate() -> None:
    # What the death signal does: the default SIGTERM action ends the process at once. If a
    # handler was installed instead, there is no parent left to be graceful for.
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)
