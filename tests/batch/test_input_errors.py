"""``annotate``'s input errors from the command line: each reported as a message with its
file and line (and the exit code 2, or 3 for a skipped bad line), never a traceback. The
reader's and the sinks' own tests are in test_reader.py and test_sinks.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from spacy_llama.cli import main

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config


# -- input errors from the command line -----------------------------------------------------
def cli(tmp_path: Path, tiny_hf: Path, inp: Path, *extra: str) -> List[str]:
    config = write_config(tmp_path, tiny_hf)
    return ["annotate", str(config), str(inp), str(tmp_path / "out.jsonl"), "--quiet", *extra]


def check_message(capsys: Any, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_input_file(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    assert main(cli(tmp_path, tiny_hf, tmp_path / "missing.jsonl")) == 2
    check_message(capsys, "missing.jsonl", "does not exist")
    assert not (tmp_path / "out.jsonl").exists()


def test_invalid_json_line_stops_by_default(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "a"}\n{"text": "b",}\n')
    assert main(cli(tmp_path, tiny_hf, inp)) == 2
    check_message(capsys, "in.jsonl:2", "invalid JSON", "--on-bad-line skip")
    assert not (tmp_path / "out.jsonl").exists()  # caught before any model is loaded


def test_invalid_json_line_skipped_and_recorded(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    rows = [json.dumps(r) for r in corpus(4)]
    rows.insert(2, "{oops")
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(rows) + "\n")
    assert main(cli(tmp_path, tiny_hf, inp, "--on-bad-line", "skip")) == 3
    check_message(capsys, "4 docs done", "1 failed")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["d0", "d1", "d2", "d3"]
    failed: List[Dict[str, Any]] = read_jsonl(tmp_path / "out.jsonl.failed.jsonl")
    assert failed == [{"source": "in.jsonl:3", "error": failed[0]["error"]}]
    assert "invalid JSON" in failed[0]["error"]


def test_non_utf8_file(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    inp = tmp_path / "in.txt"
    inp.write_bytes("Grüße aus Köln\n".encode("latin-1"))
    assert main(cli(tmp_path, tiny_hf, inp)) == 2
    check_message(capsys, "in.txt:1", "not valid UTF-8")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_input(tmp_path: Path, tiny_hf: Path, capsys: Any, content: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(content)
    assert main(cli(tmp_path, tiny_hf, inp)) == 2
    check_message(capsys, "contains no documents")


def test_duplicate_ids_are_bad_lines(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    assert main(cli(tmp_path, tiny_hf, inp)) == 2
    check_message(capsys, "in.jsonl:2", "duplicate id 'x'")


def test_bad_config_and_override(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(2))
    args = cli(tmp_path, tiny_hf, inp)
    assert main([*args, "--components.llama.generation.max_new_tokens", "0"]) == 2
    check_message(capsys, "Could not build the pipeline", "max_new_tokens")
    args[1] = str(tmp_path / "nope.cfg")
    assert main(args) == 2
    check_message(capsys, "nope.cfg", "does not exist")
