"""Reading an annotation corpus: .txt, .jsonl, .spacy files, or a folder of them.

Every document gets an id that stays the same from run to run (the one in the input, or
``<file>:<line>``), because resuming and sharding both work by id. Readers are generators,
so a corpus of any size is read in constant memory. A line that cannot be used is yielded
as a :class:`BadLine` naming its file and line, and the caller decides to stop or skip.
"""

from __future__ import annotations

import hashlib
import json
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


def read_corpus(path: Union[str, Path], *, vocab: Vocab) -> Iterator[Item]:
    """Every record (or bad line) of ``path``, file by file in sorted order."""
    root = Path(path)
    for file in input_files(root):
        name = file.name if root.is_file() else file.relative_to(root).as_posix()
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
    if not isinstance(obj, dict):
        return BadLine(source, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        return BadLine(source, 'no "text" string field')
    raw_id = obj.pop("id", None)
    if raw_id is None:
        raw_id = source
    elif not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
        return BadLine(source, f'"id" must be a string or an integer, got {raw_id!r}')
    return Record(id=str(raw_id), raw_id=raw_id, text=text, fields=obj, source=source)


def read_docbin(file: Path, *, name: str, vocab: Vocab) -> Iterator[Item]:
    try:
        docbin = DocBin(store_user_data=True).from_disk(file)
    except Exception as e:  # msgpack/zlib errors: the file is not a DocBin
        raise CorpusError(Errors.E004.format(path=str(file), error=e)) from None
    for index, doc in enumerate(docbin.get_docs(vocab), 1):
        source = f"{name}#{index}"
        raw_id = doc.user_data.get(ID_KEY, source)
        fields = dict(doc.user_data.get(FIELDS_KEY) or {})
        fields["text"] = doc.text
        yield Record(
            id=str(raw_id), raw_id=raw_id, text=doc.text, fields=fields, source=source, doc=doc
        )


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
