"""batch/local.py: ``annotate`` in this process. Its records are what the pipeline itself
makes of each text; its counts are the engine's; a resume does only the missing docs and
ends with the records of an uninterrupted run; memory zones change nothing.
(The command line around it, kill -9 and merging: test_annotate.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.util import load_config, load_model_from_config

import spacy_llama.batch.local as annotator

from ..fixtures.corpus_files import assert_same_records, corpus, read_jsonl, run, write_jsonl
from ..fixtures.helpers import write_config


@pytest.fixture
def setup(tmp_path: Path, tiny_hf: Path) -> Dict[str, Path]:
    return {"config": write_config(tmp_path, tiny_hf), "dir": tmp_path, "model": tiny_hf}


def _read_docbin_folder(folder: Path, vocab: Any) -> List[Doc]:
    docs: List[Doc] = []
    for part in sorted(folder.glob("part-*.spacy")):
        docs.extend(DocBin().from_disk(part).get_docs(vocab))
    return docs


def test_records_are_the_pipelines_own_output(setup: Dict[str, Path]) -> None:
    """Oracle: the pipeline of the same config, called on each text on its own."""
    rows = corpus(7)
    inp = write_jsonl(setup["dir"] / "in.jsonl", rows)
    out = setup["dir"] / "out.jsonl"
    summary = run(setup["config"], inp, out, batch_size=3, no_cache=True)
    records = read_jsonl(out)
    nlp = load_model_from_config(load_config(setup["config"]), auto_fill=True)
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    for rec, row in zip(records, rows):
        doc = nlp(row["text"])
        assert rec["text"] == row["text"] and rec["n"] == row["n"]  # input fields kept
        assert rec["llama_completion"] == doc._.llama_completion
        assert rec["llama_logprobs"] == pytest.approx(doc._.llama_logprobs, abs=1e-4)
    # the counts are the engine's: one model call per doc, every generated token once
    assert (summary.done, summary.skipped, summary.failed) == (7, 0, 0)
    assert summary.model_calls == 7 and summary.cache_hits == 0
    assert summary.generated_tokens == sum(len(r["llama_logprobs"]) for r in records)


def test_resume_does_only_the_missing_docs(setup: Dict[str, Path]) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(10))
    out = setup["dir"] / "out.jsonl"
    first = run(setup["config"], inp, out, limit=6, no_cache=True)
    assert first.done == 6 and len(read_jsonl(out)) == 6
    resumed = run(setup["config"], inp, out, resume=True, no_cache=True)
    assert (resumed.done, resumed.skipped, resumed.failed) == (4, 6, 0)
    assert resumed.model_calls == 4  # no doc of the first run went to the model again
    fresh = setup["dir"] / "fresh.jsonl"
    run(setup["config"], inp, fresh, no_cache=True)
    assert_same_records(read_jsonl(out), read_jsonl(fresh))


def test_memory_zones_do_not_change_records(setup: Dict[str, Path], monkeypatch: Any) -> None:
    inp = write_jsonl(setup["dir"] / "in.jsonl", corpus(10))
    whole, zoned = setup["dir"] / "whole.jsonl", setup["dir"] / "zoned.jsonl"
    run(setup["config"], inp, whole, batch_size=2)
    monkeypatch.setattr(annotator, "ZONE_DOCS", 3)  # four zones of at most 3 docs
    run(setup["config"], inp, zoned, batch_size=2, docbin=setup["dir"] / "zoned.spacy")
    assert_same_records(read_jsonl(zoned), read_jsonl(whole))
    docs = _read_docbin_folder(setup["dir"] / "zoned.spacy", spacy.blank("en").vocab)
    assert [d.text for d in docs] == [r["text"] for r in read_jsonl(whole)]
