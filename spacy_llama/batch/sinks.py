"""The output side of an annotate run, built so that an interrupted run can be resumed.

* :class:`JsonlSink` appends a whole batch of records with one ``write`` and fsyncs it;
  on resume it reads the ids already there and cuts off a half-written last line.
* :class:`DocBinSink` writes each batch it is given as ``part-NNNNN.spacy`` files in a
  folder (one part per batch, split at ``part_size`` docs), each atomically (temporary
  file, fsync, rename), so a killed run loses no batch that was written.
* :class:`FailedSink` lists documents and input lines that could not be annotated.
* :class:`Outputs` holds the sinks of one run, local or Ray: a doc is done once every
  sink has it.

A string UTF-8 cannot hold (a lone surrogate) is written as a JSON escape rather than
stopping the run: the reader turns such input lines away, but the failed list must be
writable whatever an error message or a bad line holds.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from ..errors import Errors, RunStateError, Warnings
from ..types import DOC_ERROR_KEY
from .files import PathLike, side_path, write_atomic
from .reader import ID_KEY


# -- JSONL -------------------------------------------------------------------------------
def scan_jsonl(path: Path, *, repair: bool) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield (line number, record) of a JSONL output. An unfinished last line (the run was
    killed mid-write) is cut off when ``repair``; a broken line elsewhere is an error."""
    good_end = 0
    pending: Optional[Tuple[int, str]] = None  # a bad line is only fatal if more follow
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if pending is not None:
                raise RunStateError(
                    Errors.E014.format(path=path, line=pending[0], reason=pending[1])
                )
            record = _parse_record(raw)
            if isinstance(record, str):
                pending = (lineno, record)
                continue
            good_end += len(raw)
            yield lineno, record
    if pending is not None:
        if not repair:
            raise RunStateError(Errors.E014.format(path=path, line=pending[0], reason=pending[1]))
        warnings.warn(f"[spacy-llama] {Warnings.W001.format(path=path)}", stacklevel=2)
        with path.open("r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())


def json_line(record: Dict[str, Any]) -> bytes:
    """One JSONL line: readable UTF-8, or all-ASCII escapes when a string has no UTF-8
    (a lone surrogate). Both read back as the same record."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


def _parse_record(raw: bytes) -> Union[Dict[str, Any], str]:
    if not raw.endswith(b"\n"):
        return "unfinished line"
    try:
        record = json.loads(raw)
    except ValueError as e:
        return f"invalid JSON: {e}"
    if not isinstance(record, dict) or "id" not in record:
        return "no id"
    return record


class JsonlSink:
    def __init__(self, path: PathLike, *, resume: bool) -> None:
        self.path = Path(path)
        self.done: Set[str] = set()
        if resume and self.path.exists():
            self.done = {str(rec["id"]) for _, rec in scan_jsonl(self.path, repair=True)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab" if resume else "wb")

    def write(self, items: Sequence[Tuple[str, Dict[str, Any]]]) -> None:
        """Append (id, record) pairs not yet in the file, as one durable write."""
        new = [(i, r) for i, r in items if i not in self.done]
        if not new:
            return
        self._file.write(b"".join(json_line(r) for _, r in new))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.update(i for i, _ in new)

    def close(self) -> None:
        self._file.close()


# -- DocBin ------------------------------------------------------------------------------
ERROR_KEY = DOC_ERROR_KEY  # set on a doc that failed even when processed alone
STATS_KEY = "spacy_llama_stats"  # engine counts accrued since the previous doc
PRIVATE_KEYS = (ERROR_KEY, STATS_KEY)  # run bookkeeping on doc.user_data, not output


def part_index(path: Path) -> int:
    return int(path.stem[len("part-") :])


def docbin_parts(folder: Path) -> List[Path]:
    """The parts of a DocBin folder in the order they were written: by number, since a run
    with a part per batch can pass part-99999 (and part-100000 sorts before it as text)."""
    parts = [p for p in folder.glob("part-*.spacy") if p.stem[len("part-") :].isdigit()]
    return sorted(parts, key=part_index)


class DocBinSink:
    """A folder of DocBin parts; every ``write`` that adds docs ends with them on disk."""

    def __init__(
        self, folder: PathLike, *, resume: bool, vocab: Vocab, part_size: int = 1000
    ) -> None:
        self.folder = Path(folder)
        self.part_size = max(1, part_size)  # the most docs in one part (a batch is split)
        self.done: Set[str] = set()
        if self.folder.exists() and not self.folder.is_dir():
            raise RunStateError(Errors.E015.format(path=self.folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = docbin_parts(self.folder)
        if not resume:
            for part in parts:
                part.unlink()
            parts = []
        for part in parts:
            docs = DocBin(store_user_data=True).from_disk(part).get_docs(vocab)
            self.done.update(str(doc.user_data.get(ID_KEY)) for doc in docs)
        self._next = part_index(parts[-1]) + 1 if parts else 0

    def write(self, items: Sequence[Tuple[str, Doc]]) -> None:
        """Write the docs not yet in the folder as parts of at most ``part_size`` docs."""
        new: Dict[str, Doc] = {}
        for doc_id, doc in items:
            if doc_id not in self.done and doc_id not in new:
                new[doc_id] = doc
        ids = list(new)
        for start in range(0, len(ids), self.part_size):
            self._write_part({i: new[i] for i in ids[start : start + self.part_size]})

    def _write_part(self, docs: Dict[str, Doc]) -> None:
        docbin = DocBin(store_user_data=True)
        for doc in docs.values():
            for key in PRIVATE_KEYS:
                doc.user_data.pop(key, None)
            docbin.add(doc)
        write_atomic(self.folder / f"part-{self._next:05d}.spacy", docbin.to_bytes())
        self._next += 1
        self.done.update(docs)

    def close(self) -> None:
        """Nothing is buffered: every part was written by the ``write`` that got its docs."""


# -- failures ----------------------------------------------------------------------------
class FailedSink:
    """``OUTPUT.failed.jsonl``: started afresh by every run, since a resume retries them."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        if self.path.exists():
            self.path.unlink()

    def write(self, record: Dict[str, Any]) -> None:
        self.count += 1
        with self.path.open("ab") as f:
            f.write(json_line(record))
            f.flush()
            os.fsync(f.fileno())


# -- the sinks of one run ---------------------------------------------------------------------
@dataclass
class Finished:
    """One annotated document on its way to the sinks: its id, its JSONL record (when the
    run writes JSONL) and the Doc for the DocBin (when it writes one)."""

    id: str
    record: Optional[Dict[str, Any]] = None
    doc: Optional[Doc] = None


class Outputs:
    """The sinks of one run, local or Ray; a doc counts as done once every sink has it."""

    def __init__(
        self, output: Path, *, docbin: Optional[Path], resume: bool, vocab: Vocab, part_size: int
    ) -> None:
        self.failed = FailedSink(side_path(output, ".failed.jsonl"))
        self.jsonl = JsonlSink(output, resume=resume) if output.suffix == ".jsonl" else None
        folder = output if output.suffix == ".spacy" else docbin
        self.docbin = (
            DocBinSink(folder, resume=resume, vocab=vocab, part_size=part_size)
            if folder is not None
            else None
        )
        sets = [s.done for s in (self.jsonl, self.docbin) if s is not None]
        self.done: Set[str] = set.intersection(*sets) if sets else set()

    @property
    def wants_record(self) -> bool:
        return self.jsonl is not None

    @property
    def wants_doc(self) -> bool:
        return self.docbin is not None

    def write(self, items: Sequence[Finished]) -> None:
        if self.jsonl is not None:
            self.jsonl.write([(f.id, f.record) for f in items if f.record is not None])
        if self.docbin is not None:
            self.docbin.write([(f.id, f.doc) for f in items if f.doc is not None])

    def close(self) -> None:
        for sink in (self.jsonl, self.docbin):
            if sink is not None:
                sink.close()
