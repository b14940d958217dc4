"""The output side of an annotate run, built so that an interrupted run can be resumed.

* :class:`JsonlSink` appends a whole batch of records with one ``write`` and fsyncs it;
  on resume it reads the ids already there and cuts off a half-written last line.
* :class:`DocBinSink` writes ``part-NNNNN.spacy`` files into a folder, each atomically
  (temporary file, fsync, rename), so memory holds at most one part.
* :class:`FailedSink` lists documents and input lines that could not be annotated.
* :class:`RunInfo` (``OUTPUT.run.json``) remembers the config hash, so a resume with a
  different config is refused instead of silently mixing two configs in one file.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from .corpus import ID_KEY

PathLike = Union[str, Path]


class RunStateError(Exception):
    """An output problem (existing output, changed config), reported as a message."""


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


# -- JSONL -------------------------------------------------------------------------------
def scan_jsonl(path: Path, *, repair: bool) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield (line number, record) of a JSONL output. An unfinished last line (the run was
    killed mid-write) is cut off when ``repair``; a broken line elsewhere is an error."""
    good_end = 0
    pending: Optional[Tuple[int, str]] = None  # a bad line is only fatal if more follow
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if pending is not None:
                raise RunStateError(f"{path}:{pending[0]} is not a valid record ({pending[1]}).")
            record = _parse_record(raw)
            if isinstance(record, str):
                pending = (lineno, record)
                continue
            good_end += len(raw)
            yield lineno, record
    if pending is not None:
        if not repair:
            raise RunStateError(f"{path}:{pending[0]} is not a valid record ({pending[1]}).")
        warnings.warn(
            f"[spacy-llama] {path}: the last line was half-written (the run was interrupted); "
            "it was removed and that document will be annotated again.",
            stacklevel=2,
        )
        with path.open("r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())


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
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for _, r in new)
        self._file.write(data.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.update(i for i, _ in new)

    def close(self) -> None:
        self._file.close()


# -- DocBin ------------------------------------------------------------------------------
PRIVATE_KEYS = ("spacy_llama_error", "spacy_llama_stats")  # run bookkeeping, not output


def docbin_parts(folder: Path) -> List[Path]:
    return sorted(folder.glob("part-*.spacy"))


class DocBinSink:
    def __init__(
        self, folder: PathLike, *, resume: bool, vocab: Vocab, part_size: int = 1000
    ) -> None:
        self.folder = Path(folder)
        self.part_size = max(1, part_size)
        self.done: Set[str] = set()
        if self.folder.exists() and not self.folder.is_dir():
            raise RunStateError(f"{self.folder} exists and is not a folder of DocBin parts.")
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = docbin_parts(self.folder)
        if not resume:
            for part in parts:
                part.unlink()
            parts = []
        for part in parts:
            docs = DocBin(store_user_data=True).from_disk(part).get_docs(vocab)
            self.done.update(str(doc.user_data.get(ID_KEY)) for doc in docs)
        self._next = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        self._bin = DocBin(store_user_data=True)
        self._pending: Set[str] = set()

    def write(self, items: Sequence[Tuple[str, Doc]]) -> None:
        for doc_id, doc in items:
            if doc_id in self.done or doc_id in self._pending:
                continue
            for key in PRIVATE_KEYS:
                doc.user_data.pop(key, None)
            self._bin.add(doc)
            self._pending.add(doc_id)
            if len(self._pending) >= self.part_size:
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        write_atomic(self.folder / f"part-{self._next:05d}.spacy", self._bin.to_bytes())
        self.done.update(self._pending)
        self._next += 1
        self._bin = DocBin(store_user_data=True)
        self._pending = set()

    def close(self) -> None:
        self.flush()


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
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


# -- run.json ----------------------------------------------------------------------------
class RunInfo:
    """What a resume must agree with: the config hash and the shard."""

    def __init__(self, output: PathLike) -> None:
        self.path = side_path(output, ".run.json")

    def read(self) -> Optional[Dict[str, Any]]:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def check(self, *, config_hash: str, shard: Optional[str], output: Path) -> None:
        old = self.read()
        if old is None:
            return
        if old.get("config_hash") != config_hash:
            raise RunStateError(
                f"{output} was written with a different config (hash {old.get('config_hash')}, "
                f"now {config_hash}). Resuming would mix two configs in one output: write to a "
                "new OUTPUT, or pass --overwrite to start again."
            )
        if old.get("shard") != shard:
            raise RunStateError(
                f"{output} was written for --shard {old.get('shard')}, not {shard}; "
                "use the same --shard to resume it."
            )

    def write(self, info: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
