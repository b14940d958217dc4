"""Reading an annotation corpus: .txt, .jsonl, .spacy files, or a folder of them.

Every document gets an id that stays the same from run to run (the one in the input, or
``<file>:<line>``), because resuming and sharding both work by id. Readers are generators,
so a corpus of any size is read in constant memory. A line that cannot be used is yielded
as a :class:`BadLine` naming its file and line, and the caller decides to stop or skip:
invalid JSON or UTF-8, and any value that could not reach every output unchanged (a lone
surrogate, nesting deeper than :data:`MAX_DEPTH`, an integer beyond 64 bits, a .spacy
input's non-JSON field), so no record stops a run when its batch is written.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from ..errors import CorpusError, Errors

SUFFIXES = (".txt", ".jsonl", ".spacy")
ID_KEY = "spacy_llama_id"  # doc.user_data key read by tasks.base.doc_label
FIELDS_KEY = "spacy_llama_fields"  # input fields kept on Docs written to a DocBin


@dataclass
class Record:
    """One input document and everything that travels with it to the output."""

    id: str  # the key for resume and sharding
    raw_id: Any  # the id as the input gave it (an int stays an int in the output)
    text: str
    fields: Dict[str, Any] = field(default_factory=dict)  # input fields in input order
    source: str = ""  # "file:line", for messages
    doc: Optional[Doc] = None  # set for .spacy inputs, whose annotations are kept


@dataclass
class BadLine:
    source: str  # "file:line"
    reason: str

    def message(self) -> str:
        return f"{self.source}: {self.reason}"


Item = Union[Record, BadLine]


def input_files(path: Union[str, Path]) -> List[Path]:
    """The files to read, in a stable order; raises CorpusError if there are none."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(Errors.E001.format(path=str(path)))
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise CorpusError(Errors.E002.format(path=str(path), suffixes=", ".join(SUFFIXES)))
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    files = [p for p in files if not any(s.startswith(".") for s in p.relative_to(path).parts)]
    if not files:
        raise CorpusError(Errors.E003.format(path=str(path), suffixes=", ".join(SUFFIXES)))
    return files


def file_name(root: Path, file: Path) -> str:
    """A file's name in ids and messages: its own for a file input, relative for a folder."""
    return file.name if root.is_file() else file.relative_to(root).as_posix()


_IDENTITY: Dict[Tuple[str, int, int], Dict[str, Any]] = {}  # (path, size, mtime) -> identity


def input_identity(path: Union[str, Path]) -> Dict[str, Dict[str, Any]]:
    """What identifies the input, per file (by the name ids use): size, mtime and the
    SHA-256 of its bytes. A resume compares it with the run's (``runinfo.py``): a line
    inserted into a .txt shifts every ``FILE:LINE`` id after it. Read once per version of a
    file in a process (the run records it at its start and at its end)."""
    root = Path(path)
    out: Dict[str, Dict[str, Any]] = {}
    for file in input_files(root):
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _IDENTITY:
            _IDENTITY[key] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": prefix_digest(file, stat.st_size),
            }
        out[file_name(root, file)] = dict(_IDENTITY[key])
    return out


def prefix_digest(file: Path, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of ``file`` (all of it when ``size`` is its size):
    a resume accepts a .txt/.jsonl input that only had lines appended."""
    h = hashlib.sha256()
    left = size
    with file.open("rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_corpus(path: Union[str, Path], *, vocab: Vocab) -> Iterator[Item]:
    """Every record (or bad line) of ``path``, file by file in sorted order."""
    root = Path(path)
    for file in input_files(root):
        name = file_name(root, file)
        if file.suffix == ".spacy":
            yield from read_docbin(file, name=name, vocab=vocab)
        else:
            yield from read_lines(file, name=name, jsonl=file.suffix == ".jsonl")


def read_lines(
    file: Path,
    *,
    name: str,
    jsonl: bool,
    offset: int = 0,
    first: int = 1,
    last: Optional[int] = None,
) -> Iterator[Item]:
    """The records of a .txt/.jsonl file, or of its lines ``first..last`` starting at byte
    ``offset`` (a Ray worker reads only its chunk of a file)."""
    # Binary reading: a non-UTF-8 byte is then reported with its line number.
    with file.open("rb") as f:
        f.seek(offset)
        for lineno, raw in enumerate(f, first):
            if last is not None and lineno > last:
                return
            source = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield BadLine(source, f"not valid UTF-8 (byte {e.start}); convert it to UTF-8")
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # blank lines are separators, not documents
            yield (
                parse_json_line(line, source=source)
                if jsonl
                else Record(
                    id=source, raw_id=source, text=line, fields={"text": line}, source=source
                )
            )


def parse_json_line(line: str, *, source: str) -> Item:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return BadLine(source, f"invalid JSON ({e.msg} at column {e.colno})")
    except RecursionError:  # the decoder recurses per level: thousands of [ or {
        return BadLine(source, Errors.E081.format(where="the line", limit=MAX_DEPTH))
    except ValueError:  # an integer literal longer than Python converts
        return BadLine(source, Errors.E082.format(limit=_max_int_digits()))
    if not isinstance(obj, dict):
        return BadLine(source, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        return BadLine(source, 'no "text" string field')
    raw_id = obj.get("id")
    if raw_id is not None and not _is_id(raw_id):
        return BadLine(source, f'"id" must be a string or an integer, got {raw_id!r}')
    problem = fields_problem(obj)
    if problem is not None:
        return BadLine(source, problem)
    obj.pop("id", None)
    if raw_id is None:
        raw_id = source
    return Record(id=str(raw_id), raw_id=raw_id, text=text, fields=obj, source=source)


def read_docbin(file: Path, *, name: str, vocab: Vocab) -> Iterator[Item]:
    try:
        docbin = DocBin(store_user_data=True).from_disk(file)
    except Exception as e:  # msgpack/zlib errors: the file is not a DocBin
        raise CorpusError(Errors.E004.format(path=str(file), error=e)) from None
    for index, doc in enumerate(docbin.get_docs(vocab), 1):
        yield docbin_record(doc, source=f"{name}#{index}")


def docbin_record(doc: Doc, *, source: str) -> Item:
    """A Doc of a .spacy input as a record, or a bad line when its id or input fields
    (from ``doc.user_data``, which holds any msgpack value) cannot go to a JSON output."""
    raw_id = doc.user_data.get(ID_KEY)
    if raw_id is None:
        raw_id = source
    elif not _is_id(raw_id):
        return BadLine(source, Errors.E085.format(key=ID_KEY, value=reprlib.repr(raw_id)))
    stored = doc.user_data.get(FIELDS_KEY) or {}
    if not isinstance(stored, dict):
        where = f"doc.user_data[{FIELDS_KEY!r}]"
        kind = f"a {type(stored).__name__}, not a dict,"
        return BadLine(source, Errors.E084.format(where=where, kind=kind, key=FIELDS_KEY))
    fields = {**stored, "text": doc.text}
    problem = value_problem(raw_id, 'field "id"') or fields_problem(fields)
    if problem is not None:
        return BadLine(source, problem)
    return Record(
        id=str(raw_id), raw_id=raw_id, text=doc.text, fields=fields, source=source, doc=doc
    )


# -- what a record may hold ---------------------------------------------------------------
# Every record must reach every output unchanged: JSONL (UTF-8 JSON, read back by a resume
# and merge) and a DocBin (msgpack, which packs 64-bit integers and nests about 500 deep).
MAX_DEPTH = 100
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _max_int_digits() -> int:
    return int(getattr(sys, "get_int_max_str_digits", lambda: 4300)())


def fields_problem(fields: Dict[Any, Any]) -> Optional[str]:
    """Why a record's fields cannot be written unchanged to every output, or None."""
    for key, value in fields.items():
        if not isinstance(key, str):
            kind = f"a {type(key).__name__} key ({reprlib.repr(key)})"
            return Errors.E084.format(where="the record", kind=kind, key=FIELDS_KEY)
        problem = _surrogate(key, "a key of the record") or value_problem(
            value, f"field {json.dumps(key)}"
        )
        if problem is not None:
            return problem
    return None


def value_problem(value: Any, where: str) -> Optional[str]:
    """Why ``value`` (``where`` names it) cannot be written unchanged, or None. Walks with
    a stack, not recursion, so no nesting can exhaust Python's stack here."""
    stack: List[Tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return Errors.E081.format(where=where, limit=MAX_DEPTH)
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    kind = f"a {type(key).__name__} key ({reprlib.repr(key)})"
                    return Errors.E084.format(where=where, kind=kind, key=FIELDS_KEY)
                problem = _surrogate(key, f"a key in {where}")
                if problem is not None:
                    return problem
                stack.append((sub, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, depth + 1) for sub in item)
        else:
            problem = _scalar_problem(item, where)
            if problem is not None:
                return problem
    return None


def _scalar_problem(item: Any, where: str) -> Optional[str]:
    if isinstance(item, str):
        return _surrogate(item, where)
    if item is None or isinstance(item, (bool, float)):
        return None
    if isinstance(item, int):
        if INT_MIN <= item <= INT_MAX:
            return None
        return Errors.E083.format(where=where, bits=item.bit_length())
    kind = f"a {type(item).__name__} value"
    return Errors.E084.format(where=where, kind=kind, key=FIELDS_KEY)


def _surrogate(text: str, where: str) -> Optional[str]:
    """A lone surrogate (a JSON escape such as \\ud800 without its pair) has no UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return Errors.E080.format(where=where, char=ascii(text[e.start])[1:-1])
    return None


# -- sharding ---------------------------------------------------------------------------
def parse_shard(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"2/4"`` -> (2, 4): the second of four slices (1-based)."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise CorpusError(Errors.E005.format(spec=spec)) from None
    if not 1 <= i <= n:
        raise CorpusError(Errors.E006.format(spec=spec))
    return i, n


def in_shard(doc_id: str, shard: Optional[Tuple[int, int]]) -> bool:
    """Slices by a hash of the id, so they stay fixed however the corpus is ordered."""
    if shard is None:
        return True
    i, n = shard
    digest = hashlib.sha1(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n == i - 1
