"""Worker processes of a ``--n-process`` run: one torch thread each, and gone with the
parent."""

from __future__ import annotations

import os
from typing import List

from .parent_watch import exit_with_parent_after_fork

_FORK_HOOK: List[bool] = []


def single_threaded_workers() -> None:
    """spaCy forks its workers. If torch already ran a parallel op here, a child inherits
    OpenMP's thread team without its threads and hangs in the next matmul, unless it drops
    to one thread first; one thread per worker is also what n_process workers want. A
    worker also exits when this process dies (see parent_watch.py): killed with kill -9,
    its workers would otherwise wait for work forever."""
    if _FORK_HOOK:
        return
    _FORK_HOOK.append(True)
    exit_with_parent_after_fork()
    # Hugging Face tokenizers would otherwise warn at every fork that it turns itself off.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def one_thread() -> None:
        import torch

        torch.set_num_threads(1)

    os.register_at_fork(after_in_child=one_thread)
