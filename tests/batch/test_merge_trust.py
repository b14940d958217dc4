"""``merge`` is as careful as ``annotate`` (issue 21, item 7): a shard run twice is refused
(or, with --partial, each document is kept once, in DocBin folders too), shards of
different inputs are refused, and every record annotate itself writes merges, with no
temporary file left behind on any failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from spacy_llama.batch.sinks import json_line
from spacy_llama.cli import main

from ..fixtures.corpus_files import corpus, read_jsonl, run, write_jsonl
from ..fixtures.helpers import write_config


@pytest.fixture
def setup(tmp_path: Path, tiny_hf: Path) -> Dict[str, Path]:
    return {"config": write_config(tmp_path, tiny_hf, max_new_tokens=2), "dir": tmp_path}


def docbin_ids(folder: Path) -> List[str]:
    ids = []
    for part in sorted(folder.glob("*.spacy")):
        for doc in DocBin().from_disk(part).get_docs(Vocab()):
            ids.append(doc.user_data["spacy_llama_id"])
    return ids


def test_docbin_shard_run_twice_is_refused_and_partial_keeps_each_doc_once(
    setup: Dict[str, Path], capsys: Any
) -> None:
    d = setup["dir"]
    inp = write_jsonl(d / "in.jsonl", corpus(12))
    a, again, b = d / "a.spacy", d / "a2.spacy", d / "b.spacy"
    run(setup["config"], inp, a, shard="1/2")
    run(setup["config"], inp, again, shard="1/2")
    run(setup["config"], inp, b, shard="2/2")
    merged = d / "m.spacy"
    assert main(["merge", str(merged), str(a), str(again), str(b)]) == 2
    err = capsys.readouterr().err
    assert "[E602]" in err and "a.spacy" in err and "a2.spacy" in err
    assert not merged.exists()
    assert main(["merge", str(merged), str(a), str(again), str(b), "--partial"]) == 0
    ids = docbin_ids(merged)
    assert sorted(ids) == sorted(f"d{i}" for i in range(12))


def test_jsonl_shard_run_twice_is_refused(setup: Dict[str, Path], capsys: Any) -> None:
    d = setup["dir"]
    inp = write_jsonl(d / "in.jsonl", corpus(6))
    a, again, b = d / "a.jsonl", d / "a2.jsonl", d / "b.jsonl"
    for out, shard in ((a, "1/2"), (again, "1/2"), (b, "2/2")):
        run(setup["config"], inp, out, shard=shard)
    assert main(["merge", str(d / "m.jsonl"), str(a), str(again), str(b)]) == 2
    assert "[E602]" in capsys.readouterr().err


def test_shards_of_different_inputs_are_refused(setup: Dict[str, Path], capsys: Any) -> None:
    d = setup["dir"]
    first = write_jsonl(d / "in.jsonl", corpus(6))
    (d / "other").mkdir()
    second = write_jsonl(d / "other" / "in.jsonl", corpus(7))
    a, b = d / "a.jsonl", d / "b.jsonl"
    run(setup["config"], first, a, shard="1/2")
    run(setup["config"], second, b, shard="2/2")
    merged = d / "m.jsonl"
    assert main(["merge", str(merged), str(a), str(b)]) == 2
    assert "[E603]" in capsys.readouterr().err
    assert not merged.exists()


def test_a_record_annotate_writes_with_escapes_merges(setup: Dict[str, Path]) -> None:
    """A string UTF-8 cannot hold is written by annotate as a JSON escape (sinks.json_line);
    merge must write it the same way instead of crashing and leaving a temporary file."""
    d = setup["dir"]
    inp = write_jsonl(d / "in.jsonl", corpus(6))
    a, b = d / "a.jsonl", d / "b.jsonl"
    run(setup["config"], inp, a, shard="1/2")
    run(setup["config"], inp, b, shard="2/2")
    records = read_jsonl(a)
    records[0]["note"] = "half a pair: \ud800"
    a.write_bytes(b"".join(json_line(r) for r in records))
    merged = d / "m.jsonl"
    assert main(["merge", str(merged), str(a), str(b)]) == 0
    got = {r["id"]: r for r in (json.loads(line) for line in merged.read_bytes().splitlines())}
    assert got[records[0]["id"]]["note"] == "half a pair: \ud800"
    assert len(got) == 6
    assert [p.name for p in d.iterdir() if "merging" in p.name] == []
