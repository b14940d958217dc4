"""One writer per output: an OS file lock held for the whole of an ``annotate`` (local or
Ray) or ``merge`` run.

Two runs writing one output corrupt it (a fresh run truncates what a resuming run appends;
two resuming runs both append the same documents), so the second run must stop at once,
before it loads a model. The lock is ``flock`` on ``OUTPUT.lock`` next to the output: the
kernel releases it when the holder's process ends, however it ends, so a run killed with
``kill -9`` never blocks the next one. A marker file could not tell a live holder from a
dead one. The holder writes its pid, host, start time and command into the lock file, so
the second run's message says which run holds it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Set

from ..errors import Errors, RunStateError
from .files import side_path
from .paths import os_reason

LOCK_SUFFIX = ".lock"
_ATTEMPTS = 5  # a holder releasing while we lock replaces the file: try the new one
_HELD: Set[int] = set()  # lock descriptors of this process


def _close_in_child() -> None:
    """A forked child (spaCy's ``--n-process`` workers) inherits the lock descriptors; if
    it kept them, a child outliving a killed parent would keep the output locked. Closing a
    copy does not release the parent's lock (flock goes with the last descriptor)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def lock_path(target: Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.lock`` (a folder output gets its lock beside it)."""
    return side_path(target, LOCK_SUFFIX)


class OutputLock:
    """An exclusive, non-blocking lock on one output (a file or a DocBin folder)."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: Optional[int] = None
        self._owner = 0

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunStateError` naming the holder."""
        for _ in range(_ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
                os.close(fd)
                raise self._error(e, holder) from None
            if self._is_current(fd):
                self._hold(fd)
                return
            os.close(fd)  # the holder removed this file as we locked it: lock the new one
        raise RunStateError(Errors.E061.format(path=self.target, lock=self.path))

    def release(self) -> None:
        if self._fd is None or self._owner != os.getpid():
            return  # not held, or a forked copy of the holder's object
        fd, self._fd = self._fd, None
        # Remove the file before unlocking: a run that locks the old file afterwards sees
        # it is gone (_is_current) and locks a new one instead of sharing a stale lock.
        if self._is_current(fd):
            try:
                self.path.unlink()
            except OSError:
                pass
        _HELD.discard(fd)
        os.close(fd)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RunStateError(
                Errors.E062.format(path=self.target, lock=self.path, reason=os_reason(e))
            ) from None

    def _is_current(self, fd: int) -> bool:
        try:
            mine, now = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def _hold(self, fd: int) -> None:
        data = json.dumps(holder_info(), ensure_ascii=False).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._fd, self._owner = fd, os.getpid()
        _HELD.add(fd)

    def _error(self, error: OSError, holder: Optional[Dict[str, Any]]) -> RunStateError:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            reason = os_reason(error)
            return RunStateError(
                Errors.E062.format(path=self.target, lock=self.path, reason=reason)
            )
        if holder is None:
            return RunStateError(Errors.E061.format(path=self.target, lock=self.path))
        fields = {k: holder.get(k, "?") for k in ("pid", "host", "started", "command")}
        return RunStateError(Errors.E060.format(path=self.target, **fields))


def holder_info() -> Dict[str, Any]:
    """Who holds a lock: enough to find the process (and to see it is the same command)."""
    started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith("__main__.py"):
        argv[0] = "python -m " + Path(argv[0]).parent.name
    command = " ".join(argv)
    if len(command) > 300:
        command = command[:297] + "..."
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
            "command": command}  # fmt: skip


def _read_holder(fd: int) -> Optional[Dict[str, Any]]:
    """The holder's record; it writes it right after locking, so wait a moment for it."""
    for attempt in range(5):
        try:
            data = json.loads(os.pread(fd, 65536, 0) or b"null")
        except (OSError, ValueError):
            data = None  # being written
        if isinstance(data, dict):
            return data
        time.sleep(0.02 * (attempt + 1))
    return None


@contextmanager
def locked(targets: Iterable[Path]) -> Iterator[None]:
    """Hold the locks of every output of a run (in the given order) until the block ends;
    if one is taken, the ones already held are released before the error propagates."""
    with ExitStack() as stack:
        for target in targets:
            stack.enter_context(OutputLock(target))
        yield
