"""End-to-end tests of ``python -m spacy_llama annotate`` and ``merge`` with a tiny model:
a killed run resumes to exactly the uninterrupted output, a half-written record is
repaired, a changed config is refused, failing docs are isolated, shards split and merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_llama.cli import main

from ..fixtures.corpus_files import assert_same_records, corpus, read_jsonl, run, write_jsonl
from ..fixtures.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture
def setup(tmp_path: Path, tiny_hf: Path) -> Dict[str, Path]:
    return {"config": write_config(tmp_path, tiny_hf), "dir": tmp_path, "model": tiny_hf}


def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path: Path, tiny_hf: Path) -> None:
    config = write_config(tmp_path, tiny_hf, max_new_tokens=6, batch_size=4)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(240))
    out = tmp_path / "killed.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "spacy_llama",
        "annotate",
        str(config),
        str(inp),
        str(out),
        "--batch-size",
        "4",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 80
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        written = _count_lines(out)
        if written >= 40:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _count_lines(out)
    assert 40 <= before < 240

    # Larger batches from here on: greedy answers do not depend on the batch.
    resumed = run(config, inp, out, resume=True, batch_size=16)
    assert resumed.skipped == before and resumed.done == 240 - before and resumed.failed == 0

    fresh = tmp_path / "fresh.jsonl"
    run(config, inp, fresh, batch_size=16, no_cache=True)
    got = read_jsonl(out)
    assert sorted(r["id"] for r in got) == sorted(f"d{i}" for i in range(240))
    assert_same_records(got, read_jsonl(fresh))


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_resume_repairs_half_written_last_record(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(20))
    full, out = setup["dir"] / "full.jsonl", setup["dir"] / "cut.jsonl"
    run(setup["config"], inp, full)
    data = full.read_bytes()
    lines = data.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:12]) + lines[12][:25])  # killed mid-record 13
    # a killed run has its run.json: it is written before the first batch
    run_json = (setup["dir"] / "full.jsonl.run.json").read_bytes()
    (setup["dir"] / "cut.jsonl.run.json").write_bytes(run_json)
    with pytest.warns(UserWarning, match="half-written"):
        summary = run(setup["config"], inp, out, resume=True)
    assert (summary.skipped, summary.done) == (12, 8)
    assert_same_records(read_jsonl(out), read_jsonl(full))


def test_resume_with_changed_config_is_refused(setup: Dict[str, Path], capsys: Any) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(6))
    out = setup["dir"] / "out.jsonl"
    args = ["annotate", str(setup["config"]), str(inp), str(out), "--quiet"]
    assert main(args) == 0
    before = out.read_bytes()
    code = main([*args, "--resume", "--components.llama.generation.max_new_tokens", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "different config" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert main([*args, "--resume"]) == 0  # the same config resumes (nothing left to do)
    assert "6 skipped" in capsys.readouterr().err


def test_existing_output_needs_resume_or_overwrite(setup: Dict[str, Path], capsys: Any) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(3))
    out = setup["dir"] / "out.jsonl"
    args = ["annotate", str(setup["config"]), str(inp), str(out), "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert len(read_jsonl(out)) == 3


def test_failing_doc_is_isolated_and_recorded(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    config = write_config(tmp_path, tiny_hf, on_overflow="error")
    docs = corpus(10)
    docs[4]["text"] = "London Paris " * 400  # far beyond the tiny model's 256-token context
    inp = write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out.jsonl"
    code = main(["annotate", str(config), str(inp), str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert "9 docs done" in err and "1 failed" in err and "FAILED" in err
    assert [r["id"] for r in read_jsonl(out)] == [d["id"] for d in docs if d["id"] != "d4"]
    failed = read_jsonl(tmp_path / "out.jsonl.failed.jsonl")
    assert [f["id"] for f in failed] == ["d4"]
    assert "PromptTooLongError" in failed[0]["error"]
    # A resume retries only the failed doc (and it fails again, alone).
    summary = run(config, inp, out, resume=True)
    assert (summary.skipped, summary.done, summary.failed) == (9, 0, 1)


def test_shards_are_disjoint_cover_and_merge(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(30))
    whole = setup["dir"] / "whole.jsonl"
    run(setup["config"], inp, whole)
    parts = [setup["dir"] / f"part{i}.jsonl" for i in (1, 2, 3)]
    for i, part in enumerate(parts, 1):
        run(setup["config"], inp, part, shard=f"{i}/3")
    ids = [{r["id"] for r in read_jsonl(p)} for p in parts]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {f"d{i}" for i in range(30)}

    merged = setup["dir"] / "merged.jsonl"
    assert main(["merge", str(merged), *map(str, parts)]) == 0
    by_id = {r["id"]: r for r in read_jsonl(merged)}
    want = read_jsonl(whole)
    assert_same_records([by_id[r["id"]] for r in want], want)
    assert len(by_id) == 30
    # The merged output resumes over the whole corpus as finished work.
    assert run(setup["config"], inp, merged, resume=True).skipped == 30


def test_merge_refuses_incomplete_or_mixed_shards(setup: Dict[str, Path], capsys: Any) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(8))
    p1, p2 = setup["dir"] / "p1.jsonl", setup["dir"] / "p2.jsonl"
    run(setup["config"], inp, p1, shard="1/2")
    other = write_config(setup["dir"], setup["model"], name="other.cfg", max_new_tokens=2)
    run(other, inp, p2, shard="2/2")
    merged = setup["dir"] / "m.jsonl"
    assert main(["merge", str(merged), str(p1)]) == 2
    assert "do not cover" in capsys.readouterr().err
    assert main(["merge", str(merged), str(p1), str(p2)]) == 2
    assert "different configs" in capsys.readouterr().err
    assert not merged.exists()


def test_docbin_output_and_print(setup: Dict[str, Path], capsys: Any) -> None:
    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    for i, text in enumerate(["Apple buys a startup in London.", "Paris is big."]):
        doc = nlp(text)
        doc.ents = [Span(doc, 0, 1, label="ORG" if i == 0 else "GPE")]
        db.add(doc)
    inp = setup["dir"] / "gold.spacy"
    db.to_disk(inp)
    out = setup["dir"] / "out.jsonl"
    folder = setup["dir"] / "out.spacy"
    args = [
        "annotate",
        str(setup["config"]),
        str(inp),
        str(out),
        "--docbin",
        str(folder),
        "--print",
        "--quiet",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "== gold.spacy#1 ==" in printed and "entities: Apple (ORG)" in printed
    records = read_jsonl(out)
    assert records[0]["ents"] == [[0, 5, "ORG"]]
    assert "llama_completion: " + records[0]["llama_completion"].strip() in printed
    docs = _read_docbin_folder(folder, nlp.vocab)
    assert [d.user_data["spacy_llama_id"] for d in docs] == ["gold.spacy#1", "gold.spacy#2"]
    assert [d._.llama_completion for d in docs] == [r["llama_completion"] for r in records]
    assert not any(k for d in docs for k in d.user_data if str(k).startswith("spacy_llama_err"))


def _read_docbin_folder(folder: Path, vocab: Any) -> List[Doc]:
    docs: List[Doc] = []
    for part in sorted(folder.glob("part-*.spacy")):
        docs.extend(DocBin().from_disk(part).get_docs(vocab))
    return docs


def test_spacy_output_resumes_and_limit(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(12))
    out = setup["dir"] / "out.spacy"
    first = run(setup["config"], inp, out, limit=5, part_size=2)
    assert first.done == 5 and len(list(out.glob("part-*.spacy"))) == 3
    second = run(setup["config"], inp, out, resume=True, part_size=4)
    assert (second.skipped, second.done) == (5, 7)
    ids = [d.user_data["spacy_llama_id"] for d in _read_docbin_folder(out, spacy.blank("en").vocab)]
    assert ids == [f"d{i}" for i in range(12)]


def test_two_processes_give_the_same_records(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(16))
    one, two = setup["dir"] / "one.jsonl", setup["dir"] / "two.jsonl"
    run(setup["config"], inp, one, no_cache=True)
    summary = run(setup["config"], inp, two, n_process=2, batch_size=4, no_cache=True)
    assert summary.model_calls == 16  # counts come back from the worker processes
    assert_same_records(read_jsonl(two), read_jsonl(one))


def test_records_keep_input_fields(setup: Dict[str, Path]) -> None:
    rows: List[Dict[str, Any]] = [
        {"id": 7, "text": "London calling.", "meta": {"a": [1, 2]}, "lang": "en"},
        {"text": "No id here.", "score": 0.5},
    ]
    inp = write_jsonl(setup["dir"] / "in.jsonl", rows)
    out = setup["dir"] / "out.jsonl"
    run(setup["config"], inp, out)
    got = read_jsonl(out)
    assert got[0]["id"] == 7 and got[0]["meta"] == {"a": [1, 2]} and got[0]["lang"] == "en"
    assert got[1]["id"] == "in.jsonl:2" and got[1]["score"] == 0.5
    for record, row in zip(got, rows):
        assert record["text"] == row["text"]
        assert isinstance(record["llama_completion"], str) and record["ents"] == []
        assert 1 <= len(record["llama_logprobs"]) <= 4  # max_new_tokens
    assert "cats" not in got[0]


def test_project_report_summarises_output_and_metrics(setup: Dict[str, Path]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(3))
    out = setup["dir"] / "out.jsonl"
    run(setup["config"], inp, out)
    metrics = setup["dir"] / "metrics.json"
    metrics.write_text(json.dumps({"ents_p": 0.5, "ents_r": 0.25, "ents_f": 1 / 3,
                                   "ents_per_type": {"ORG": {"p": 1.0, "r": 0.5, "f": 2 / 3}}}))
    target = setup["dir"] / "report.md"
    assert report.main([str(out), str(metrics), str(target)]) == 0
    text = target.read_text()
    assert "documents annotated: 3" in text and "failed: 0" in text
    assert "| all | 50.0 | 25.0 | 33.3 |" in text and "| ORG | 100.0 | 50.0 | 66.7 |" in text
    assert "**d0**" in text and "llama_completion" in text


def test_merge_docbin_shards(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(10))
    parts = [setup["dir"] / f"p{i}.spacy" for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        run(setup["config"], inp, part, shard=f"{i}/2", part_size=3)
    merged = setup["dir"] / "all.spacy"
    assert main(["merge", str(merged), *map(str, parts)]) == 0
    docs = _read_docbin_folder(merged, spacy.blank("en").vocab)
    assert sorted(d.user_data["spacy_llama_id"] for d in docs) == sorted(f"d{i}" for i in range(10))
    assert all(isinstance(d._.llama_completion, str) for d in docs)
