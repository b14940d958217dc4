"""Records that used to stop a run for good: a lone surrogate, deep nesting, huge numbers,
non-JSON values from a .spacy input, a text over ``nlp.max_length``. Each is a bad line
(reported with file:line before the model loads, or recorded and skipped) or a failed doc
(recorded, the rest of its batch written); a resume afterwards works. Also: a resume
without a readable ``OUTPUT.run.json`` is refused. (The reader's and the sinks' own checks
of such records are in test_reader.py and test_sinks.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_llama.batch.failures import isolate_failures, record_doc
from spacy_llama.batch.reader import ID_KEY, Record
from spacy_llama.batch.runinfo import RunInfo
from spacy_llama.batch.sinks import ERROR_KEY, docbin_parts
from spacy_llama.cli import main
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config
from ..fixtures.poison_lines import POISON, REASONS


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


def _on_disk(folder: Path) -> List[str]:
    vocab = spacy.blank("en").vocab
    return [
        d.user_data[ID_KEY]
        for part in docbin_parts(folder)
        for d in DocBin().from_disk(part).get_docs(vocab)
    ]


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
