"""Records that used to stop a run for good: a lone surrogate, deep nesting, huge numbers,
non-JSON values from a .spacy input, a text over ``nlp.max_length``. Each is a bad line
(reported with file:line before the model loads, or recorded and skipped) or a failed doc
(recorded, the rest of its batch written); a resume afterwards works. Also: the output
files stay writable for such records, a DocBin part is on disk once its batch is written,
and a resume without a readable ``OUTPUT.run.json`` is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_llama.batch.failures import isolate_failures, record_doc
from spacy_llama.batch.reader import FIELDS_KEY, ID_KEY, BadLine, Record, read_corpus
from spacy_llama.batch.runinfo import RunInfo
from spacy_llama.batch.sinks import ERROR_KEY, DocBinSink, FailedSink, JsonlSink, docbin_parts
from spacy_llama.cli import main
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config

VOCAB = spacy.blank("en").vocab
SURROGATE = "\\ud800"  # as the JSONL holds it: a JSON escape for a lone surrogate

POISON = {
    "surrogate in text": '{"id": "p1", "text": "bad ' + SURROGATE + ' text"}',
    "surrogate in a field": '{"id": "p2", "text": "fine", "note": "x' + SURROGATE + '"}',
    "surrogate in a key": '{"id": "p3", "text": "fine", "k' + SURROGATE + '": 1}',
    "surrogate in the id": '{"id": "p' + SURROGATE + '", "text": "fine"}',
    "nested past the recursion limit": '{"text": "x", "a": ' + "[" * 5000 + "]" * 5000 + "}",
    "nested past the depth limit": '{"text": "x", "a": ' + "[" * 300 + "]" * 300 + "}",
    "a number too long to read": '{"id": ' + "7" * 5000 + ', "text": "x"}',
    "an id beyond 64 bits": '{"id": ' + str(2**70) + ', "text": "x"}',
    "a field int beyond 64 bits": '{"text": "x", "n": ' + str(-(2**64)) + "}",
}
REASONS = {  # a fragment of each reason, the code of its message
    "surrogate in text": ('field "text"', "E080"),
    "surrogate in a field": ('field "note"', "E080"),
    "surrogate in a key": ("a key", "E080"),
    "surrogate in the id": ('field "id"', "E080"),
    "nested past the recursion limit": ("nested deeper than", "E081"),
    "nested past the depth limit": ('field "a"', "E081"),
    "a number too long to read": ("digits", "E082"),
    "an id beyond 64 bits": ('field "id"', "E083"),
    "a field int beyond 64 bits": ('field "n"', "E083"),
}


def items(path: Path) -> List[Any]:
    return list(read_corpus(path, vocab=VOCAB))


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


def test_a_doc_that_failed_before_the_pipeline_keeps_its_reason() -> None:
    """The stand-in of a text over max_length also fails a component (here: every doc
    does); the retry skips it and its first reason is what the failed list gets."""
    nlp = spacy.blank("en")
    calls: List[str] = []

    def proc(doc: Any) -> None:
        calls.append(doc.text)
        raise ValueError("component broke")

    stand_in = record_doc(nlp, Record(id="x", raw_id="x", text="a" * (nlp.max_length + 1)))
    other = record_doc(nlp, Record(id="y", raw_id="y", text="fine"))
    isolate_failures("llama", proc, [stand_in, other], ValueError("batch broke"))
    assert calls == ["fine"]  # only the doc that had not failed is retried
    assert "[E086]" in stand_in.user_data[ERROR_KEY]
    assert "component broke" in other.user_data[ERROR_KEY]
    isolate_failures("llama", proc, [stand_in], ValueError("alone"))
    assert "[E086]" in stand_in.user_data[ERROR_KEY]


# -- the output files take what reaches them ------------------------------------------------
def test_failed_and_jsonl_sinks_escape_a_surrogate(tmp_path: Path) -> None:
    """The failed list (and, defensively, the output) writes a string UTF-8 cannot hold as
    a JSON escape instead of crashing, and reads back the same string."""
    failed = FailedSink(tmp_path / "o.failed.jsonl")
    failed.write({"id": "a\ud800", "source": "in.jsonl:1", "error": "Köln \udfff"})
    failed.write({"id": 2, "source": "in.jsonl:2", "error": "Köln"})
    lines = (tmp_path / "o.failed.jsonl").read_bytes().splitlines()
    assert json.loads(lines[0]) == {"id": "a\ud800", "source": "in.jsonl:1", "error": "Köln \udfff"}
    assert "Köln".encode() in lines[1]  # readable UTF-8 where it can be
    sink = JsonlSink(tmp_path / "o.jsonl", resume=False)
    sink.write([("a", {"id": "a", "text": "x\ud800"}), ("b", {"id": "b", "text": "y"})])
    sink.close()
    assert [r["text"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["x\ud800", "y"]


def _docs(n: int, start: int = 0) -> List[Any]:
    nlp = spacy.blank("en")
    out = []
    for i in range(start, start + n):
        doc = nlp(f"doc {i}")
        doc.user_data[ID_KEY] = f"d{i}"
        out.append((f"d{i}", doc))
    return out


def _on_disk(folder: Path) -> List[str]:
    return [
        d.user_data[ID_KEY]
        for part in docbin_parts(folder)
        for d in DocBin().from_disk(part).get_docs(VOCAB)
    ]


def test_docbin_batch_is_on_disk_before_close(tmp_path: Path) -> None:
    """A killed run (no close) keeps every batch its DocBin sink was given."""
    folder = tmp_path / "o.spacy"
    sink = DocBinSink(folder, resume=False, vocab=VOCAB, part_size=1000)
    sink.write(_docs(3))
    assert _on_disk(folder) == ["d0", "d1", "d2"]
    sink.write(_docs(2, start=3))
    assert _on_disk(folder) == [f"d{i}" for i in range(5)]
    assert len(docbin_parts(folder)) == 2  # one part per batch
    again = DocBinSink(folder, resume=True, vocab=VOCAB, part_size=2)  # never closed `sink`
    assert again.done == {f"d{i}" for i in range(5)}
    again.write(_docs(10))  # d5..d9 are new: more than part_size, so split in 2 + 2 + 1
    assert _on_disk(folder) == [f"d{i}" for i in range(10)]
    assert len(docbin_parts(folder)) == 5


def test_docbin_parts_are_in_numeric_order(tmp_path: Path) -> None:
    """With a part per batch a run can pass part 99999; part-100000 comes after it."""
    folder = tmp_path / "o.spacy"
    folder.mkdir()
    for index, (_, doc) in zip((99999, 100000), _docs(2)):
        db = DocBin(store_user_data=True)
        db.add(doc)
        db.to_disk(folder / f"part-{index:05d}.spacy")
    assert [p.name for p in docbin_parts(folder)] == ["part-99999.spacy", "part-100000.spacy"]
    sink = DocBinSink(folder, resume=True, vocab=VOCAB)
    sink.write(_docs(1, start=2))
    assert _on_disk(folder) == ["d0", "d1", "d2"]


# -- whole runs -------------------------------------------------------------------------------
def cli(tmp_path: Path, tiny_hf: Path, inp: Path, out: Path, *extra: str) -> List[str]:
    config = write_config(tmp_path, tiny_hf)
    return ["annotate", str(config), str(inp), str(out), "--quiet", *extra]


def stderr(capsys: Any) -> str:
    err: str = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("case", ["surrogate in the id", "nested past the recursion limit"])
def test_poison_line_stops_the_run_before_the_model(
    tmp_path: Path, tiny_hf: Path, capsys: Any, case: str
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "ok"}\n' + POISON[case] + "\n")
    out = tmp_path / "out.jsonl"
    assert main(cli(tmp_path, tiny_hf, inp, out)) == 2
    err = stderr(capsys)
    assert "in.jsonl:2" in err and REASONS[case][1] in err and "--on-bad-line skip" in err
    assert not out.exists()


def test_poison_records_are_skipped_and_resume_works(
    tmp_path: Path, tiny_hf: Path, capsys: Any
) -> None:
    good = corpus(4)
    rows = [json.dumps(r) for r in good]
    rows.insert(1, POISON["surrogate in text"])
    rows.insert(3, POISON["nested past the recursion limit"])
    rows.append(POISON["an id beyond 64 bits"])
    rows.append(POISON["surrogate in the id"])
    rows.append(json.dumps({"id": "long", "text": "a" * 1_000_001}))  # over nlp.max_length
    rows.append(json.dumps({"id": "nul", "text": "NUL \x00 inside"}))
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(rows) + "\n")
    out, folder = tmp_path / "out.jsonl", tmp_path / "out.spacy"
    args = cli(tmp_path, tiny_hf, inp, out, "--docbin", str(folder), "--on-bad-line", "skip")
    want = [d["id"] for d in good] + ["nul"]

    assert main(args) == 3
    err = stderr(capsys)
    assert "5 docs done" in err and "5 failed" in err
    assert [r["id"] for r in read_jsonl(out)] == want
    assert _on_disk(folder) == want
    failed = read_jsonl(tmp_path / "out.jsonl.failed.jsonl")
    assert [f["source"] for f in failed] == [f"in.jsonl:{i}" for i in (2, 4, 7, 8, 9)]
    assert failed[-1]["id"] == "long" and "[E086]" in failed[-1]["error"]
    assert "max_length" in failed[-1]["error"]
    before = out.read_bytes()

    assert main([*args, "--resume"]) == 3  # the same records fail again; nothing crashes
    err = stderr(capsys)
    assert "0 docs done, 5 skipped" in err and "5 failed" in err
    assert out.read_bytes() == before and _on_disk(folder) == want
    assert len(read_jsonl(tmp_path / "out.jsonl.failed.jsonl")) == 5


# -- run.json ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "garbage", "not an object"])
def test_resume_without_readable_run_json_is_refused(
    tmp_path: Path, tiny_hf: Path, capsys: Any, damage: str
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    out = tmp_path / "out.jsonl"
    args = cli(tmp_path, tiny_hf, inp, out)
    assert main(args) == 0
    before = out.read_bytes()
    info = tmp_path / "out.jsonl.run.json"
    if damage == "missing":
        info.unlink()
    else:
        info.write_text("{not json" if damage == "garbage" else "[1, 2]")
    assert main([*args, "--resume"]) == 2
    err = stderr(capsys)
    assert "out.jsonl.run.json" in err and "--overwrite" in err and "new OUTPUT" in err
    assert ("[E087]" if damage == "missing" else "[E088]") in err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert main([*args, "--resume"]) == 0


def test_resume_of_an_output_without_records_needs_no_run_json(tmp_path: Path) -> None:
    """A run killed before its first batch (a Ray run writes run.json with it) resumes."""
    for name in ("empty.jsonl", "empty.spacy"):
        out = tmp_path / name
        out.mkdir() if name.endswith(".spacy") else out.write_bytes(b"")
        RunInfo(out).check(config_hash="abc", shard=None, output=out)
        out.joinpath("part-00000.spacy").write_bytes(b"") if out.is_dir() else out.write_text("x")
        with pytest.raises(RunStateError, match="E087"):
            RunInfo(out).check(config_hash="abc", shard=None, output=out)
