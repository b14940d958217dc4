"""What ``annotate`` writes is checked before a model is loaded: no output may be (or lie in,
or contain) the input, and every output must be writable; an I/O error while writing (a
full disk) is one message and exit code 2, and the output still resumes."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from spacy_llama.batch.sinks import JsonlSink
from spacy_llama.cli import main

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config


def snapshot(folder: Path) -> Dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_refused(capsys: Any, argv: List[str], *fragments: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Could not build" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# -- an output that is the input ---------------------------------------------------------------
# Each case: (input, OUTPUT, extra options, expected code) built in the input folder ``src``.
Case = Tuple[Path, Path, List[str], str]


def output_is_input(src: Path) -> Case:
    inp = write_jsonl(src / "in.jsonl", corpus(3))
    return inp, inp, [], "[E063]"


def output_is_a_symlink_to_input(src: Path) -> Case:
    inp = write_jsonl(src / "in.jsonl", corpus(3))
    (src.parent / "link.jsonl").symlink_to(inp)
    return inp, src.parent / "link.jsonl", [], "[E063]"


def output_is_a_hard_link_to_input(src: Path) -> Case:
    inp = write_jsonl(src / "in.jsonl", corpus(3))
    os.link(inp, src.parent / "hard.jsonl")
    return inp, src.parent / "hard.jsonl", [], "[E063]"


def output_inside_input_folder(src: Path) -> Case:
    write_jsonl(src / "a.jsonl", corpus(3))
    return src, src / "out.jsonl", [], "[E064]"


def output_inside_input_folder_through_a_symlink(src: Path) -> Case:
    write_jsonl(src / "a.jsonl", corpus(3))
    (src.parent / "alias").symlink_to(src, target_is_directory=True)
    return src, src.parent / "alias" / "out.jsonl", [], "[E064]"


def cache_is_input(src: Path) -> Case:
    inp = write_jsonl(src / "in.jsonl", corpus(3))
    return inp, src.parent / "out.jsonl", ["--cache", str(inp)], "[E063]"


def failed_list_is_input(src: Path) -> Case:
    inp = write_jsonl(src / "out.jsonl.failed.jsonl", corpus(3))  # retrying a failed list
    return inp, src / "out.jsonl", [], "[E063]"


def docbin_is_input_folder(src: Path) -> Case:
    folder = src / "docs.spacy"
    folder.mkdir()
    (folder / "part-00000.spacy").write_bytes(_docbin_bytes())
    return folder, src.parent / "out.jsonl", ["--docbin", str(folder)], "[E063]"


def input_inside_output_folder(src: Path) -> Case:
    folder = src / "docs.spacy"
    folder.mkdir()
    part = folder / "part-00000.spacy"
    part.write_bytes(_docbin_bytes())
    return part, folder, [], "[E065]"


def _docbin_bytes() -> bytes:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    return DocBin(docs=[nlp("One doc."), nlp("Another doc.")], store_user_data=True).to_bytes()


@pytest.mark.parametrize(
    "build",
    [
        output_is_input,
        output_is_a_symlink_to_input,
        output_is_a_hard_link_to_input,
        output_inside_input_folder,
        output_inside_input_folder_through_a_symlink,
        cache_is_input,
        failed_list_is_input,
        docbin_is_input_folder,
        input_inside_output_folder,
    ],
)
def test_output_that_is_the_input_is_refused(
    tmp_path: Path, tiny_hf: Path, capsys: Any, build: Callable[[Path], Case]
) -> None:
    config = write_config(tmp_path, tiny_hf)
    src = tmp_path / "src"
    src.mkdir()
    inp, out, extra, code = build(src)
    before = snapshot(src)
    argv = ["annotate", str(config), str(inp), str(out), "--overwrite", "--quiet", *extra]
    check_refused(capsys, argv, code, str(inp))
    assert snapshot(src) == before  # not a byte of the input changed


# -- unwritable outputs -----------------------------------------------------------------------
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into. chmod 0o555 stops a normal user, but not
    root (tests may run as root), so then the folder is a path under a regular file."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except PermissionError:
        return folder
    os.close(fd)
    os.unlink(probe)
    folder.chmod(0o755)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    return blocker / "sub"


@pytest.mark.parametrize("which", ["OUTPUT", "--docbin", "--cache"])
def test_unwritable_output_is_reported_before_the_model_loads(
    tmp_path: Path, capsys: Any, which: str
) -> None:
    # A model that does not exist: had the loader run first, its error would show instead.
    config = write_config(tmp_path, tmp_path / "no-such-model")
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(3))
    bad = unwritable_folder(tmp_path)
    out, extra = tmp_path / "out.jsonl", []
    if which == "OUTPUT":
        out = bad / "out.jsonl"
    else:
        extra = [which, str(bad / ("docs.spacy" if which == "--docbin" else "cache.sqlite"))]
    argv = ["annotate", str(config), str(inp), str(out), "--quiet", *extra]
    try:
        wanted = ["[E069]", "--no-cache"] if which == "--cache" else ["[E066]", f"write {which}"]
        check_refused(capsys, argv, *wanted, str(bad.parent))
    finally:
        if bad.is_dir():
            bad.chmod(0o755)
    assert not out.exists()


def test_full_disk_mid_run_is_one_message_and_resumes(
    tmp_path: Path, tiny_hf: Path, capsys: Any, monkeypatch: Any
) -> None:
    config = write_config(tmp_path, tiny_hf, batch_size=2)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(8))
    out = tmp_path / "out.jsonl"
    argv = ["annotate", str(config), str(inp), str(out), "--batch-size", "2", "--quiet"]
    write = JsonlSink.write
    calls: List[int] = []

    def disk_fills_up(self: JsonlSink, items: Any) -> None:
        calls.append(len(items))
        if len(calls) < 3:
            return write(self, items)
        with self.path.open("ab") as f:
            f.write(b'{"id": "d4", "te')  # the kernel took part of the batch, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JsonlSink, "write", disk_fills_up)
    check_refused(capsys, argv, "[E067]", f"Writing {out} failed", "(ENOSPC)", "--resume")
    assert [r["id"] for r in _complete_records(out)] == ["d0", "d1", "d2", "d3"]

    monkeypatch.setattr(JsonlSink, "write", write)  # space freed
    assert main([*argv, "--resume"]) == 0
    assert [r["id"] for r in read_jsonl(out)] == [f"d{i}" for i in range(8)]


def _complete_records(path: Path) -> List[Dict[str, Any]]:
    import json

    lines = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[:-1]]


# -- outputs on one path ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "output, extra, fragment",
    [
        ("out.jsonl", ["--cache", "out.jsonl"], "--cache"),
        ("out.spacy", ["--docbin", "out.spacy"], "--docbin"),
        ("out.jsonl", ["--cache", "out.jsonl.failed.jsonl"], "--cache"),
    ],
)
def test_two_outputs_on_one_path_are_refused(
    tmp_path: Path, tiny_hf: Path, capsys: Any, output: str, extra: List[str], fragment: str
) -> None:
    config = write_config(tmp_path, tiny_hf)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(3))
    other = tmp_path / extra[1]
    argv = [
        "annotate",
        str(config),
        str(inp),
        str(tmp_path / output),
        "--quiet",
        extra[0],
        str(other),
    ]
    check_refused(capsys, argv, "[E068]", f"{fragment} {other} is also")
    assert not (tmp_path / output).exists()


def test_merge_into_one_of_its_shards_is_refused(tmp_path: Path, capsys: Any) -> None:
    shards = []
    for name in ("a.spacy", "b.spacy"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "part-00000.spacy").write_bytes(_docbin_bytes())
        shards.append(folder)
    before = snapshot(tmp_path)
    argv = ["merge", str(shards[0]), str(shards[0]), str(shards[1]), "--overwrite", "--partial"]
    check_refused(capsys, argv, "[E063]", f"OUTPUT {shards[0]} is the input {shards[0]}")
    assert snapshot(tmp_path) == before


def test_full_disk_writing_a_skipped_bad_line_is_one_message(
    tmp_path: Path, tiny_hf: Path, capsys: Any, monkeypatch: Any
) -> None:
    """--on-bad-line skip lists the bad line in OUTPUT.failed.jsonl before any model runs;
    a full disk there is the same one-line E067 as for the outputs, not a traceback."""
    from spacy_llama.batch.sinks import FailedSink

    config = write_config(tmp_path, tiny_hf)
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "d0", "text": "one"}\nnot json\n', encoding="utf8")
    out = tmp_path / "out.jsonl"

    def disk_full(self: FailedSink, record: Dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(FailedSink, "write", disk_full)
    argv = ["annotate", str(config), str(inp), str(out), "--on-bad-line", "skip", "--quiet"]
    check_refused(capsys, argv, "[E067]", "out.jsonl.failed.jsonl", "(ENOSPC)")
