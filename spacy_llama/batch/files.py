"""Durable file writes: what a killed run leaves behind is either old or whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


def side_path(output: PathLike, suffix: str) -> Path:
    """``outputs/x.jsonl`` -> ``outputs/x.jsonl<suffix>``: files that belong to one output."""
    output = Path(output)
    return output.with_name(output.name + suffix)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable too (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
