"""batch/reader.py: .txt/.jsonl/.spacy and folders -> Record | BadLine, with ids that stay the
same however, wherever and in whatever pieces the corpus is read (resume and sharding key
on them), and each input problem a bad line naming its file and line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import DocBin, Span

from spacy_llama.batch.reader import (
    FIELDS_KEY,
    ID_KEY,
    BadLine,
    CorpusError,
    Record,
    in_shard,
    input_files,
    parse_shard,
    read_corpus,
    read_lines,
)

from ..fixtures.corpus_files import write_jsonl
from ..fixtures.poison_lines import POISON, REASONS

VOCAB = spacy.blank("en").vocab


def items(path: Path) -> List[Any]:
    return list(read_corpus(path, vocab=VOCAB))


def test_txt_one_doc_a_line_with_stable_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffFirst doc.\r\n\n  \nSecond – doc.\nThird".encode())
    got = items(path)
    assert [(r.id, r.text) for r in got] == [
        ("a.txt:1", "First doc."), ("a.txt:4", "Second – doc."), ("a.txt:5", "Third")
    ]
    assert got[0].fields == {"text": "First doc."}


def test_jsonl_keeps_id_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [
        {"id": 3, "text": "x", "meta": {"k": [1]}},
        {"text": "y", "lang": "de"},
        {"id": "z9", "text": ""},
    ])
    got = items(path)
    assert [(r.id, r.raw_id) for r in got] == [("3", 3), ("b.jsonl:2", "b.jsonl:2"), ("z9", "z9")]
    assert got[0].fields == {"text": "x", "meta": {"k": [1]}}
    assert got[1].fields == {"text": "y", "lang": "de"}


def test_folder_is_walked_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two\n")
    (tmp_path / "a.txt").write_text("one\n")
    write_jsonl(tmp_path / "b" / "1.jsonl", [{"text": "three"}])
    (tmp_path / ".hidden" / "x.txt").write_text("hidden\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    assert [r.id for r in items(tmp_path)] == ["a.txt:1", "b/1.jsonl:1", "b/2.txt:1"]


def test_docbin_input_keeps_annotations_and_ids(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    doc = nlp("Apple is in Cupertino.")
    doc.ents = [Span(doc, 0, 1, label="ORG")]
    db.add(doc)
    tagged = nlp("Tagged.")
    tagged.user_data["spacy_llama_id"] = "t1"
    db.add(tagged)
    db.to_disk(tmp_path / "g.spacy")
    got = items(tmp_path / "g.spacy")
    assert [r.id for r in got] == ["g.spacy#1", "t1"]
    assert got[0].doc is not None and [e.label_ for e in got[0].doc.ents] == ["ORG"]


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"text": "ok", ', "invalid JSON"),
        ('["text"]', "expected a JSON object"),
        ('{"txt": "typo"}', 'no "text"'),
        ('{"text": "x", "id": [1]}', '"id" must be'),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + '\n{"text": "also fine"}\n')
    got = items(path)
    assert isinstance(got[0], Record) and isinstance(got[2], Record)
    assert isinstance(got[1], BadLine) and got[1].source == "c.jsonl:2"
    assert reason in got[1].reason


def test_non_utf8_line_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"ok\n" + "café\n".encode("latin-1"))
    got = items(path)
    assert isinstance(got[1], BadLine) and got[1].source == "latin.txt:2"
    assert "UTF-8" in got[1].reason


def test_input_files_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        input_files(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="holds no"):
        input_files(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unknown extension"):
        input_files(tmp_path / "x.csv")
    (tmp_path / "broken.spacy").write_bytes(b"not a docbin")
    with pytest.raises(CorpusError, match="not a readable spaCy DocBin"):
        items(tmp_path / "broken.spacy")


def test_shards_are_disjoint_and_cover() -> None:
    ids = [f"doc-{i}" for i in range(1000)]
    slices = [{i for i in ids if in_shard(i, (k, 4))} for k in range(1, 5)]
    assert sum(len(s) for s in slices) == 1000 and set().union(*slices) == set(ids)
    assert all(150 < len(s) < 350 for s in slices)  # roughly even
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1/"):
        with pytest.raises(CorpusError):
            parse_shard(bad)



@pytest.mark.parametrize("case", sorted(POISON))
def test_poison_line_is_a_bad_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\n' + POISON[case] + '\n{"text": "also ok"}\n')
    got = items(path)
    assert isinstance(got[0], Record) and isinstance(got[2], Record)
    bad = got[1]
    assert isinstance(bad, BadLine) and bad.source == "in.jsonl:2", bad
    fragment, code = REASONS[case]
    assert fragment in bad.reason and f"[{code}]" in bad.reason, bad.reason
    bad.message().encode("utf-8")  # printable and writable as it is


def test_ordinary_values_stay_records(tmp_path: Path) -> None:
    """The checks reject only what cannot be written: NUL, non-ASCII, a valid surrogate
    pair (an emoji as a JSON escape), 64-bit ints and nesting within the limit pass."""
    path = tmp_path / "in.jsonl"
    lines = [
        '{"id": 18446744073709551615, "text": "nul \\u0000 inside", "n": -9223372036854775808}',
        '{"text": "emoji \\ud83d\\ude00 K\\u00f6ln", "a": ' + "[" * 50 + "]" * 50 + "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    got = items(path)
    assert all(isinstance(r, Record) for r in got), got
    assert got[0].raw_id == 2**64 - 1 and "\x00" in got[0].text
    assert got[1].text == "emoji \U0001f600 Köln"


def test_docbin_input_with_non_json_values_is_bad(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    user_data: List[Dict[Any, Any]] = [
        {FIELDS_KEY: {"blob": b"\x00\x01"}},
        {FIELDS_KEY: {"m": {1: "int key"}}},
        {ID_KEY: 1.5},
        {ID_KEY: b"bytes-id"},
        {ID_KEY: "ok", FIELDS_KEY: {"lang": "de", "tags": [1, 2.5, None, True]}},
        {ID_KEY: None},  # no id: the source is the id
    ]
    for i, data in enumerate(user_data):
        doc = nlp(f"doc {i}")
        doc.user_data.update(data)
        db.add(doc)
    db.to_disk(tmp_path / "in.spacy")
    got = items(tmp_path / "in.spacy")
    assert [type(x).__name__ for x in got] == ["BadLine"] * 4 + ["Record"] * 2
    reasons = [x.reason for x in got[:4]]
    assert '"blob"' in reasons[0] and "bytes" in reasons[0] and "[E084]" in reasons[0]
    assert '"m"' in reasons[1] and "key" in reasons[1] and "[E084]" in reasons[1]
    assert all("[E085]" in r for r in reasons[2:]), reasons
    # msgpack gives lists back as tuples, which JSON writes as lists
    assert got[4].fields == {"lang": "de", "tags": (1, 2.5, None, True), "text": "doc 4"}
    assert got[5].id == "in.spacy#6"


# -- ids are stable ----------------------------------------------------------------------
def _mixed_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("one\n\ntwo\n")
    write_jsonl(root / "sub" / "b.jsonl", [{"text": "x"}, {"id": 7, "text": "y"}, {"text": "z"}])
    db = DocBin(store_user_data=True)
    for text in ("p", "q"):
        db.add(spacy.blank("en")(text))
    db.to_disk(root / "sub" / "c.spacy")
    return root


def _ids(path: Path) -> List[str]:
    return [r.id for r in items(path) if isinstance(r, Record)]


def test_ids_do_not_depend_on_where_the_corpus_lives(tmp_path: Path) -> None:
    first = _mixed_folder(tmp_path / "here")
    want = ["a.txt:1", "a.txt:3", "sub/b.jsonl:1", "7", "sub/b.jsonl:3", "sub/c.spacy#1",
            "sub/c.spacy#2"]  # fmt: skip
    assert _ids(first) == want
    moved = tmp_path / "elsewhere" / "deeper" / "corpus"
    shutil.copytree(first, moved)
    assert _ids(moved) == want  # names are relative to the input, not absolute paths
    assert _ids(first) == want  # and reading twice changes nothing


def test_appending_lines_and_adding_files_keep_the_ids_already_given(tmp_path: Path) -> None:
    root = _mixed_folder(tmp_path / "c")
    before = {r.id: r.text for r in items(root) if isinstance(r, Record)}
    with (root / "a.txt").open("a") as f:
        f.write("three\n")
    (root / "0-first.txt").write_text("sorts before every other file\n")
    after = {r.id: r.text for r in items(root) if isinstance(r, Record)}
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"a.txt:4", "0-first.txt:1"}


def test_a_chunk_read_from_its_offset_has_the_ids_of_the_whole_read(tmp_path: Path) -> None:
    """A Ray worker reads only lines first..last from a byte offset: the same records."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i}"} for i in range(9)])
    whole = list(read_lines(path, name="in.jsonl", jsonl=True))
    raw = path.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in raw[:4])  # line 5 starts here
    chunk = list(read_lines(path, name="in.jsonl", jsonl=True, offset=offset, first=5, last=7))
    assert [(r.id, r.text) for r in chunk] == [(r.id, r.text) for r in whole[4:7]]


def test_shard_of_an_id_is_a_fixed_function_of_the_id() -> None:
    """An id's slice depends on the id alone (sha1 of its UTF-8, not Python's salted
    hash()): shard runs of the same corpus in any order, in any process, split it the same
    way."""
    ids = [f"doc-{i}" for i in range(200)] + ["a.txt:1", "7", "Köln"]
    for n in (2, 3, 7):
        for doc_id in ids:
            k = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8")).digest()[:8], "big") % n
            assert [in_shard(doc_id, (i, n)) for i in range(1, n + 1)] == [
                i == k + 1 for i in range(1, n + 1)
            ]
