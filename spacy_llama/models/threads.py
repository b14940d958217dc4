"""How many threads torch uses, set once per process from the cores this process may use.

torch's default is the machine's core count, whatever share of it the process has (a
``taskset``, a container's CPU set, a Ray actor's share), and on a shared CPU its threads then
wait on each other: on a loaded 2-core machine one thread was 3.4x faster than the default.
The rule, first match wins:

1. ``SPACY_LLAMA_THREADS`` (a whole number >= 1): the override;
2. ``OMP_NUM_THREADS`` set: torch already follows it, we leave it;
3. otherwise the number of cores in ``os.sched_getaffinity(0)`` (``os.cpu_count()`` where
   the platform has no affinity).

The first call decides (the ``llama`` factory and the CLI's pipeline loading both call it);
later calls keep that choice, so a Ray actor's share (passed as ``explicit``) is not
overridden by the pipeline it then loads.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional, Tuple

from ..errors import Errors, SettingError

ENV = "SPACY_LLAMA_THREADS"
logger = logging.getLogger("spacy_llama")
_CHOSEN: list = []  # [(threads, source)] once decided in this process
_LOCK = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return max(1, os.cpu_count() or 1)


def threads_from_env() -> Optional[int]:
    raw = os.environ.get(ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingError(Errors.E832.format(env=ENV, value=raw))
    return value


def choose_threads(explicit: Optional[int] = None) -> Tuple[Optional[int], str]:
    """(threads, where the number comes from); threads None: leave torch's setting."""
    if explicit is not None:
        return int(explicit), "the caller"
    env = threads_from_env()
    if env is not None:
        return env, ENV
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "OMP_NUM_THREADS"
    return usable_cores(), "os.sched_getaffinity"


def configure_threads(explicit: Optional[int] = None) -> Tuple[int, str]:
    """Set torch's intra-op threads by the rule above, once per process; returns the
    number torch uses and where it came from."""
    with _LOCK:
        if _CHOSEN:
            return _CHOSEN[0]  # type: ignore[no-any-return]
        import torch

        threads, source = choose_threads(explicit)
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        chosen = (torch.get_num_threads(), source)
        _CHOSEN.append(chosen)
        logger.info("[spacy-llama] torch threads: %d (from %s)", chosen[0], source)
        return chosen


def reset_threads_choice() -> None:
    """Forget the choice (tests; a process that wants the rule applied again)."""
    with _LOCK:
        _CHOSEN.clear()
