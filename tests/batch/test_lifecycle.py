"""The steps both runners take (batch/lifecycle.py), one at a time, without a model where
none is needed: run.json over a run, what is still to do, a doc's outcome, the batch write,
and readying a pipeline (its cache and the stats stamp)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import spacy
from spacy.vocab import Vocab

from spacy_llama.batch.lifecycle import (
    MAX_ERROR,
    RunRecord,
    close_outputs,
    count_outcome,
    doc_outcome,
    load_run_pipeline,
    open_outputs,
    pending,
    pending_records,
    ready_for_run,
    write_batch,
)
from spacy_llama.batch.options import AnnotateOptions
from spacy_llama.batch.reader import Record
from spacy_llama.batch.run_stats import COMPONENT as RUN_STATS
from spacy_llama.batch.sinks import ERROR_KEY, STATS_KEY, Finished
from spacy_llama.batch.summary import Summary
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config


def options(tmp_path: Path, **kw: Any) -> AnnotateOptions:
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        write_jsonl(inp, corpus(5))
    return AnnotateOptions(
        config=tmp_path / "x.cfg", input=inp, output=tmp_path / "out.jsonl", **kw
    )


def read_info(opts: AnnotateOptions) -> Dict[str, Any]:
    return json.loads(Path(str(opts.output) + ".run.json").read_text(encoding="utf-8"))


def test_run_record_starts_once_and_finishes_with_the_summary(tmp_path: Path) -> None:
    opts = options(tmp_path)
    record = RunRecord(opts, runner="ray")
    record.start("h1", {"nlp.lang": "a"})
    first = read_info(opts)
    assert first["config_hash"] == "h1" and first["finished"] is False
    assert first["runner"] == "ray" and first["config_keys"] == {"nlp.lang": "a"}
    record.start("h2", None)  # a later batch's hash: the first one stands
    assert read_info(opts) == first
    record.finish(Summary(done=3, skipped=1))
    done = read_info(opts)
    assert done["finished"] is True and done["config_hash"] == "h1"
    assert (done["summary"]["done"], done["summary"]["skipped"]) == (3, 1)


def test_run_record_finishes_with_the_known_hash_when_nothing_started(tmp_path: Path) -> None:
    """A Ray resume with nothing left to do keeps the old run's hash."""
    opts = options(tmp_path)
    RunRecord(opts, config_hash="old").finish(Summary())
    info = read_info(opts)
    assert info["config_hash"] == "old" and info["finished"] is True and "runner" not in info


def test_run_record_refuses_a_resume_with_another_config(tmp_path: Path) -> None:
    opts = options(tmp_path)
    RunRecord(opts).start("h1", {"components.llama.x": "1"})
    opts.output.write_text('{"id": "d0"}\n', encoding="utf-8")  # records to add to
    resumed = RunRecord(options(tmp_path, resume=True))
    with pytest.raises(RunStateError, match=r"E600.*components\.llama\.x"):
        resumed.start("h2", {"components.llama.x": "2"})
    assert not resumed.started and read_info(opts)["config_hash"] == "h1"
    resumed.start("h1", {"components.llama.x": "1"})  # the same config resumes
    assert resumed.started


def test_pending_skips_what_is_done_and_counts_it() -> None:
    records = [Record(id=f"d{i}", raw_id=f"d{i}", text="x") for i in range(4)]
    summary = Summary()
    assert [r.id for r in pending(records, {"d1", "d3"}, summary)] == ["d0", "d2"]
    assert summary.skipped == 2


def test_pending_records_counts_bad_lines_once_read(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "one"}\nnot json\n{"id": "b", "text": "two"}\n')
    opts = options(tmp_path, on_bad_line="skip")
    outputs = open_outputs(opts, Vocab())
    summary = Summary()
    try:
        with pending_records(opts, None, outputs, summary, vocab=Vocab()) as records:
            assert [r.id for r in records] == ["a", "b"]
    finally:
        close_outputs(outputs)
    assert summary.failed == 1  # the bad line, recorded in the failed list by the selector


def test_doc_outcome_takes_the_stamps_off_the_doc() -> None:
    doc = spacy.blank("en")("A text.")
    doc.user_data[STATS_KEY] = {"model_calls": 2}
    doc.user_data[ERROR_KEY] = "x" * (MAX_ERROR + 50)
    stats, error = doc_outcome(doc)
    assert stats == {"model_calls": 2} and error == "x" * MAX_ERROR
    assert STATS_KEY not in doc.user_data and ERROR_KEY not in doc.user_data
    assert doc_outcome(spacy.blank("en")("Fine.")) == ({}, None)


def test_count_outcome_and_write_batch(tmp_path: Path) -> None:
    opts = options(tmp_path)
    outputs = open_outputs(opts, Vocab())
    summary = Summary(failed_path=outputs.failed.path)
    try:
        ok = count_outcome(
            outputs, summary, raw_id="d0", source="in.jsonl:1", stats={"model_calls": 1},
            error=None,
        )  # fmt: skip
        failed = count_outcome(
            outputs, summary, raw_id="d1", source="in.jsonl:2", stats={"model_calls": 2},
            error="llama: ValueError: no",
        )  # fmt: skip
        write_batch(outputs, summary, [Finished(id="d0", record={"id": "d0"}, doc=None)])
    finally:
        close_outputs(outputs)
    assert (ok, failed) == (False, True)
    assert (summary.done, summary.failed, summary.model_calls) == (1, 1, 3)
    assert read_jsonl(opts.output) == [{"id": "d0"}]
    assert read_jsonl(outputs.failed.path) == [
        {"id": "d1", "source": "in.jsonl:2", "error": "llama: ValueError: no"}
    ]


def test_ready_for_run_gives_a_cache_and_stamps_stats(tmp_path: Path, tiny_hf: Path) -> None:
    config = write_config(tmp_path, tiny_hf)
    run = load_run_pipeline(config, overrides={})
    pipe = run.nlp.get_pipe("llama")
    assert pipe.engine.cache is None and RUN_STATS not in run.nlp.pipe_names
    hashed = run.config_hash
    ready_for_run(run, cache=tmp_path / "cache.sqlite")
    assert pipe.engine.cache is not None
    assert run.nlp.pipe_names[-1] == RUN_STATS
    assert run.extensions == ["doc._.llama_completion", "doc._.llama_logprobs"]
    assert run.config_hash == hashed  # hashed before the run changed the pipeline
    doc = run.nlp("Paris is a city.")
    stats, error = doc_outcome(doc)
    assert error is None and stats["model_calls"] == 1 and stats["generated_tokens"] >= 1
    again, _ = doc_outcome(run.nlp("Paris is a city."))
    assert again["cache_hits"] == 1 and again["model_calls"] == 0
    assert (tmp_path / "cache.sqlite").exists()
