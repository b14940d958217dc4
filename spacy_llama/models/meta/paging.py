"""Giving back the pages of memory-mapped shards once their tensors have been copied.

Shards are opened with ``mmap=True`` and each merged tensor is written into one fresh
buffer; dropping the source pages as we go keeps the peak near one copy of the weights
(see benchmarks/meta_load_memory.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _libc_madvise() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - exotic libc
        return None
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MADVISE = _libc_madvise()


def file_mappings(files: List[Path]) -> List[Tuple[int, int]]:
    """Address ranges where ``files`` are mapped in this process (from /proc/self/maps)."""
    if _MADVISE is None:
        return []
    names = {str(f.resolve()) for f in files}
    ranges: List[Tuple[int, int]] = []
    try:
        with open("/proc/self/maps", encoding="utf8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in names:
                    start, end = fields[0].split("-")
                    ranges.append((int(start, 16), int(end, 16)))
    except OSError:  # pragma: no cover - no procfs
        return []
    merged: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):  # one mapping may be listed as adjacent pieces
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def drop_pages(t: torch.Tensor, mapped: List[Tuple[int, int]]) -> None:
    """Give back the resident pages of an mmapped shard tensor we have finished copying.

    Only for memory inside ``mapped`` (the shard files' own mappings): those pages are clean
    and file-backed (MAP_PRIVATE, never written), so the kernel re-reads them from the file
    if they are touched again; anonymous memory would be zeroed, so it is never touched.
    Without this, the whole checkpoint stays resident next to the merged copy until the last
    shard is closed (peak = 2x, see benchmarks/meta_load_memory.py)."""
    if _MADVISE is None:
        return
    storage = t.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    page = mmap.PAGESIZE
    lo = (start + page - 1) // page * page
    hi = (start + size) // page * page
    if hi > lo and any(a <= lo and hi <= b for a, b in mapped):
        _MADVISE(lo, hi - lo, mmap.MADV_DONTNEED)
