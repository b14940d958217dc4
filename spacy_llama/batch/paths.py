"""The files a corpus run writes, checked before any model is loaded, and I/O errors
while writing them turned into one message.

A run writes OUTPUT, ``OUTPUT.failed.jsonl``, ``OUTPUT.run.json``, ``OUTPUT.lock``, the
``--docbin`` folder and the response cache. None of them may be (or lie inside) the input
being read, or an ``--overwrite`` run would destroy its own input; and all of them must be
writable, so that a read-only folder is reported at once instead of after the model has
loaded. An ``OSError`` while writing (a full disk, a lost mount) stops the run with the path
and the reason; the batches already written stay valid, so ``--resume`` continues.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence

from ..errors import AnnotateError, Errors, RunStateError
from .files import side_path
from .options import AnnotateOptions


class OutputPath(NamedTuple):
    what: str  # how the user named it, for messages
    path: Path
    folder: bool  # a DocBin folder (else a file)


def output_paths(opts: AnnotateOptions) -> List[OutputPath]:
    """Everything the run writes (the lock files lie beside OUTPUT and --docbin)."""
    out = opts.output
    paths = [
        OutputPath("OUTPUT", out, out.suffix == ".spacy"),
        OutputPath("the failed list", side_path(out, ".failed.jsonl"), False),
        OutputPath("the run record", side_path(out, ".run.json"), False),
    ]
    if opts.docbin is not None:
        paths.append(OutputPath("--docbin", opts.docbin, True))
    if opts.cache_path is not None:
        paths.append(OutputPath("--cache", opts.cache_path, False))
    return paths


def lock_targets(opts: AnnotateOptions) -> List[Path]:
    """The outputs a run locks: OUTPUT (its side files share its lock) and --docbin."""
    return [opts.output] + ([opts.docbin] if opts.docbin is not None else [])


def check_paths(opts: AnnotateOptions) -> None:
    """Everything about the output paths that can be known before the run starts."""
    check_distinct(opts)
    check_not_input(opts)
    check_writable(opts)


def check_distinct(opts: AnnotateOptions) -> None:
    """Two outputs of one run on one path (``--cache OUTPUT``, ``--docbin OUTPUT``) would
    overwrite each other."""
    seen: List[OutputPath] = []
    for out in output_paths(opts):
        for other in seen:
            if same_path(out.path, other.path):
                raise AnnotateError(
                    Errors.E068.format(what=out.what, path=out.path, other=other.what)
                )
        seen.append(out)


# -- outputs vs the input ------------------------------------------------------------------
def check_not_input(opts: AnnotateOptions) -> None:
    """Refuse an output that is the input, lies in the input folder, or contains the input
    (symlinks resolved; hard links caught by ``samefile`` where both exist)."""
    source = Path(opts.input)
    for out in output_paths(opts):
        if same_path(out.path, source):
            raise AnnotateError(Errors.E063.format(what=out.what, path=out.path, input=source))
        if source.is_dir() and _inside(out.path, source):
            raise AnnotateError(Errors.E064.format(what=out.what, path=out.path, input=source))
        if out.folder and _inside(source, out.path):
            raise AnnotateError(Errors.E065.format(what=out.what, path=out.path, input=source))


def same_path(a: Path, b: Path) -> bool:
    """One file or folder: the same inode where both exist, else the same resolved path."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


# -- writability ----------------------------------------------------------------------------
def check_writable(opts: AnnotateOptions) -> None:
    """Create the folders the run writes into and check they (and existing files) take
    writes. A probe file, not ``os.access``: root passes every permission check but a
    read-only mount, and ``os.access`` knows nothing of either."""
    probed: List[Path] = []
    for out in output_paths(opts):
        folders = [out.path.parent] + ([out.path] if out.folder and out.path.is_dir() else [])
        for folder in folders:
            if folder not in probed:
                _probe_folder(out, folder)
                probed.append(folder)
        if not out.folder and out.path.exists():
            _probe_file(out)


def _probe_folder(out: OutputPath, folder: Path) -> None:
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise _unwritable(out, f"{blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".spacy-llama-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(out, os_reason(e)) from None


def _probe_file(out: OutputPath) -> None:
    try:
        with out.path.open("ab"):  # appending nothing changes nothing
            pass
    except OSError as e:
        raise _unwritable(out, os_reason(e)) from None


def _unwritable(out: OutputPath, reason: str) -> AnnotateError:
    if out.what == "--cache":  # the one output a run can do without
        return AnnotateError(Errors.E069.format(path=out.path, reason=reason))
    return AnnotateError(Errors.E066.format(what=out.what, path=out.path, reason=reason))


def _file_in_the_way(folder: Path) -> Optional[Path]:
    """The nearest existing ancestor of ``folder`` (or itself) if it is not a folder."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


# -- errors while writing -------------------------------------------------------------------
def os_reason(error: OSError) -> str:
    """``No space left on device (ENOSPC)``: the reason a user can act on, and its name."""
    if error.errno is None:
        return str(error)
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{os.strerror(error.errno)} ({name})"


@contextmanager
def io_errors(paths: Sequence[Path]) -> Iterator[None]:
    """An ``OSError`` inside becomes one message naming the file (the error's own, else
    the outputs being written: ``write()`` on an open file does not say which) and the
    reason, instead of a traceback."""
    try:
        yield
    except OSError as e:
        where = str(e.filename) if e.filename else " or ".join(str(p) for p in paths)
        raise RunStateError(Errors.E067.format(path=where, reason=os_reason(e))) from None
