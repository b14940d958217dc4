"""batch/sinks.py: the run's output files. Each id is written once; every ``write`` is on
disk when it returns (a killed run keeps it, with no ``close``); a resume reads back what
was written, repairing only a half-written last line; strings UTF-8 cannot hold are
escaped rather than fatal."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_llama.batch.reader import ID_KEY
from spacy_llama.batch.sinks import (
    DocBinSink,
    FailedSink,
    Finished,
    JsonlSink,
    Outputs,
    docbin_parts,
    scan_jsonl,
)
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import read_jsonl

VOCAB = spacy.blank("en").vocab


# -- output files -------------------------------------------------------------------------
def test_jsonl_sink_appends_each_id_once(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    sink = JsonlSink(path, resume=False)
    sink.write([("a", {"id": "a"}), ("b", {"id": "b"})])
    sink.close()
    sink = JsonlSink(path, resume=True)
    assert sink.done == {"a", "b"}
    sink.write([("b", {"id": "b"}), ("c", {"id": "c"})])
    sink.close()
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_scan_repairs_only_a_broken_last_line(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "te')
    with pytest.warns(UserWarning, match="half-written"):
        assert [r["id"] for _, r in scan_jsonl(path, repair=True)] == [1, 2]
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'
    path.write_bytes(b'{"id": 1}\nGARBAGE\n{"id": 3}\n')
    with pytest.raises(RunStateError, match="o.jsonl:2"):
        list(scan_jsonl(path, repair=True))


def test_docbin_sink_writes_whole_parts(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    docs = []
    for i in range(5):
        doc = nlp(f"doc {i}")
        doc.user_data["spacy_llama_id"] = f"d{i}"
        doc.user_data["spacy_llama_error"] = None  # bookkeeping never reaches the output
        docs.append((f"d{i}", doc))
    sink = DocBinSink(tmp_path / "o.spacy", resume=False, vocab=nlp.vocab, part_size=2)
    sink.write(docs[:3])
    assert len(list((tmp_path / "o.spacy").glob("part-*.spacy"))) == 2  # d0 d1 | d2
    sink.close()
    again = DocBinSink(tmp_path / "o.spacy", resume=True, vocab=nlp.vocab, part_size=2)
    assert again.done == {"d0", "d1", "d2"}
    again.write(docs)
    again.close()
    parts = sorted((tmp_path / "o.spacy").glob("part-*.spacy"))
    read = [d for p in parts for d in DocBin().from_disk(p).get_docs(nlp.vocab)]
    assert [d.user_data["spacy_llama_id"] for d in read] == [f"d{i}" for i in range(5)]
    assert all("spacy_llama_error" not in d.user_data for d in read)


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


# -- a write survives a kill ---------------------------------------------------------------
def killed_writer(out: Path) -> None:
    """In a forked child: one batch through every sink of a run, then SIGKILL (no close,
    no flush at exit, no ``finally``): only what ``write`` made durable is left."""
    nlp = spacy.blank("en")
    outputs = Outputs(out, docbin=out.with_suffix(".spacy"), resume=False, vocab=nlp.vocab,
                      part_size=1000)  # fmt: skip
    items = []
    for i in range(3):
        doc = nlp(f"doc {i}")
        doc.user_data[ID_KEY] = f"d{i}"
        record = {"id": f"d{i}", "text": doc.text, "i": i}
        items.append(Finished(id=f"d{i}", record=record, doc=doc))
    outputs.write(items)
    outputs.failed.write({"id": "bad", "source": "in.jsonl:4", "error": "broken"})
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_write_survives_a_kill_9_before_close(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pid = os.fork()  # a fresh interpreter would spend seconds importing spaCy
    if pid == 0:
        try:
            killed_writer(out)
        finally:
            os._exit(1)  # never back into pytest from the child
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the writing child did not finish in 60 s")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert read_jsonl(out) == [{"id": f"d{i}", "text": f"doc {i}", "i": i} for i in range(3)]
    assert _on_disk(tmp_path / "out.spacy") == ["d0", "d1", "d2"]
    assert read_jsonl(tmp_path / "out.jsonl.failed.jsonl") == [
        {"id": "bad", "source": "in.jsonl:4", "error": "broken"}
    ]
    # the resumed run sees every doc the killed one wrote as done, in both sinks
    again = Outputs(out, docbin=tmp_path / "out.spacy", resume=True, vocab=VOCAB, part_size=1000)
    assert again.done == {"d0", "d1", "d2"}
    again.close()


def test_a_doc_is_done_only_once_every_sink_has_it(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    nlp = spacy.blank("en")
    outputs = Outputs(out, docbin=tmp_path / "out.spacy", resume=False, vocab=VOCAB, part_size=5)
    doc = nlp("a")
    doc.user_data[ID_KEY] = "a"
    outputs.write([Finished(id="a", record={"id": "a"}, doc=doc)])
    outputs.jsonl.write([("b", {"id": "b"})])  # type: ignore[union-attr]  # JSONL only
    outputs.close()
    again = Outputs(out, docbin=tmp_path / "out.spacy", resume=True, vocab=VOCAB, part_size=5)
    assert again.done == {"a"}  # "b" is missing from the DocBin: it is done again
    again.close()
