"""A resume continues the same run or is refused, and says why:

* the input must be the input the run started on (issue 21, item 4): a line inserted at
  the top of a .txt shifts every ``FILE:LINE`` id, and another file resumed into the same
  OUTPUT would be appended; a file that only grew at its end resumes;
* the config must decide the same output (issue 26, item 4): a changed batch size or
  prompt lookup is the same run; a refusal names the settings that changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from spacy_llama.cli import main

from ..fixtures.corpus_files import read_jsonl, run
from ..fixtures.helpers import write_config


@pytest.fixture
def config(tmp_path: Path, tiny_hf: Path) -> Path:
    return write_config(tmp_path, tiny_hf)


def args(config: Path, inp: Path, out: Path, *extra: str) -> List[str]:
    return ["annotate", str(config), str(inp), str(out), "--quiet", *extra]


def lines(n: int, start: int = 0) -> str:
    return "".join(f"Line {i} is about Paris.\n" for i in range(start, start + n))


def by_id(out: Path) -> Dict[str, Any]:
    return {r["id"]: r for r in read_jsonl(out)}


def test_line_inserted_at_the_top_of_a_txt_is_refused(
    tmp_path: Path, config: Path, capsys: Any
) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(6), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out, "--limit", "3")) == 0
    before = out.read_bytes()
    inp.write_text("A new first line.\n" + lines(6), encoding="utf-8")
    code = main(args(config, inp, out, "--resume"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "[E601]" in err and "in.txt changed" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert out.read_bytes() == before  # nothing written twice, nothing skipped


def test_another_input_file_into_the_same_output_is_refused(
    tmp_path: Path, config: Path, capsys: Any
) -> None:
    first, other = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(lines(3), encoding="utf-8")
    other.write_text(lines(3, start=10), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, first, out)) == 0
    before = out.read_bytes()
    assert main(args(config, other, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "[E601]" in err and "a.txt is no longer in the input" in err
    assert out.read_bytes() == before


def test_same_name_other_content_is_refused(tmp_path: Path, config: Path, capsys: Any) -> None:
    (tmp_path / "x").mkdir()
    first, other = tmp_path / "in.txt", tmp_path / "x" / "in.txt"
    first.write_text(lines(3), encoding="utf-8")
    other.write_text(lines(3, start=5), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, first, out)) == 0
    assert main(args(config, other, out, "--resume")) == 2
    assert "[E601]" in capsys.readouterr().err


def test_appended_lines_and_an_untouched_input_resume(tmp_path: Path, config: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(4), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out)) == 0
    first = by_id(out)
    assert main(args(config, inp, out, "--resume")) == 0  # nothing changed
    with inp.open("a", encoding="utf-8") as f:
        f.write(lines(2, start=4))
    assert main(args(config, inp, out, "--resume")) == 0
    got = by_id(out)
    assert sorted(got) == sorted(f"in.txt:{i}" for i in range(1, 7))
    assert len(read_jsonl(out)) == 6  # each once
    assert all(got[k] == v for k, v in first.items())
    recorded = json.loads((tmp_path / "out.jsonl.run.json").read_text())["inputs"]
    assert recorded["in.txt"]["size"] == inp.stat().st_size  # the grown file is recorded


def test_touched_but_unchanged_input_resumes(tmp_path: Path, config: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(3), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out, "--limit", "2")) == 0
    inp.write_text(lines(3), encoding="utf-8")  # rewritten: new mtime, same bytes
    assert main(args(config, inp, out, "--resume")) == 0
    assert len(read_jsonl(out)) == 3


def test_run_json_without_input_identity_warns_and_resumes(tmp_path: Path, config: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(3), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out, "--limit", "2")) == 0
    run_json = tmp_path / "out.jsonl.run.json"
    old = json.loads(run_json.read_text())
    del old["inputs"]  # what an older version wrote
    run_json.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="W600"):
        run(config, inp, out, resume=True)
    assert len(read_jsonl(out)) == 3


@pytest.mark.parametrize(
    "override",
    [
        ["--components.llama.batch_size", "3"],
        ["--nlp.batch_size", "5"],
        ["--components.llama.prompt_lookup", "false"],
        ["--components.llama.prefix_cache", "false"],
    ],
)
def test_speed_settings_do_not_refuse_resume(
    tmp_path: Path, config: Path, override: List[str]
) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(4), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out, "--limit", "2")) == 0
    assert main(args(config, inp, out, "--resume", *override)) == 0
    assert len(read_jsonl(out)) == 4


def test_refusal_names_the_changed_keys(tmp_path: Path, config: Path, capsys: Any) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(lines(2), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out)) == 0
    capsys.readouterr()
    extra = ["--components.llama.generation.max_new_tokens", "2"]
    extra += ["--components.llama.generation.temperature", "0.5"]
    assert main(args(config, inp, out, "--resume", *extra)) == 2
    err = capsys.readouterr().err
    assert "[E600]" in err and "different config" in err
    assert "components.llama.generation.max_new_tokens" in err
    assert "components.llama.generation.temperature" in err
    assert "components.llama.generation.top_p" not in err


def test_another_scorer_does_not_refuse_resume(tmp_path: Path, config: Path) -> None:
    """The scorer decides what `evaluate` reports, not what `annotate` writes."""
    inp = tmp_path / "in.txt"
    inp.write_text(lines(4), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(args(config, inp, out, "--limit", "2")) == 0
    other = tmp_path / "other.cfg"
    scorer = '\n[components.llama.scorer]\n@scorers = "spacy.textcat_scorer.v2"\n'
    other.write_text(config.read_text(encoding="utf-8") + scorer, encoding="utf-8")
    assert main(args(other, inp, out, "--resume")) == 0
    assert len(read_jsonl(out)) == 4
