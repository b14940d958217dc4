"""``annotate --ray`` on a local Ray cluster (started in-process, two workers) gives the
local command's records for the same corpus (greedy), resumes by id, and reports a
pipeline that cannot be built as the local command does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import torch
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from spacy_llama.batch.local import annotate
from spacy_llama.batch.options import AnnotateOptions, RayOptions
from spacy_llama.batch.ray import annotate_ray
from spacy_llama.cli import main
from spacy_llama.errors import AnnotateError, PipelineError

from ..fixtures.corpus_files import assert_same_records
from ..fixtures.helpers import write_config
from ..fixtures.tiny import CORPUS


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        pytest.fail("Ray Data is not installed: run `make install-test`")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    lines: List[Dict[str, Any]] = [
        {"id": i, "text": text, "source_name": f"s{i % 3}"} for i, text in enumerate(CORPUS[:11])
    ]
    lines.insert(3, {"id": "x", "text": "A record with a string id."})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def config_file(folder: Path, model: Path) -> Path:
    return write_config(folder, model, batch_size=4, max_new_tokens=5)


def options(config: Path, corpus: Path, output: Path, **kwargs: Any) -> AnnotateOptions:
    return AnnotateOptions(config=config, input=corpus, output=output, quiet=True, **kwargs)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ray_run_equals_local_run_and_resumes(
    ray_cluster: Any, tiny_hf: Path, corpus: Path, tmp_path: Path
) -> None:
    config = config_file(tmp_path, tiny_hf)
    # Each actor runs torch on one thread (its CPU share). The local run must too for the
    # log-probabilities to match to the last bit: thread count changes float summation order
    # (greedy completions match either way; logprobs would differ around the 6th digit).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = annotate(
            options(config, corpus, tmp_path / "local.jsonl", docbin=tmp_path / "l.spacy")
        )
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray.jsonl"
    summary = annotate_ray(
        options(config, corpus, out, docbin=tmp_path / "r.spacy"), RayOptions(workers=2)
    )
    expected = read_jsonl(tmp_path / "local.jsonl")
    assert local.done == summary.done == 12 and summary.failed == 0
    # same records, same order; log-probs to float tolerance: which docs a batch holds
    # (cache hits leave it, and which actor hits first is timing) changes the padding
    assert_same_records(read_jsonl(out), expected)
    # CORPUS repeats texts: repeats are cache hits (which actor hits first is timing).
    assert summary.model_calls + summary.cache_hits == 12 and summary.model_calls >= 7
    assert docbin_docs(tmp_path / "r.spacy") == docbin_docs(tmp_path / "l.spacy")
    run_info = json.loads((tmp_path / "ray.jsonl.run.json").read_text())
    local_info = json.loads((tmp_path / "local.jsonl.run.json").read_text())
    assert run_info["config_hash"] == local_info["config_hash"] and run_info["finished"]

    # Lose the last records (a killed run), then resume on Ray: only those are annotated.
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:5]), encoding="utf-8")
    resumed = annotate_ray(options(config, corpus, out, resume=True), RayOptions(workers=2))
    assert (resumed.skipped, resumed.done, resumed.failed) == (5, 7, 0)
    assert resumed.model_calls + resumed.cache_hits == 7
    assert_same_records(read_jsonl(out), expected)


def docbin_docs(folder: Path) -> List[Any]:
    out = []
    for part in sorted(folder.glob("part-*.spacy")):
        for doc in DocBin(store_user_data=True).from_disk(part).get_docs(Vocab()):
            out.append((doc.user_data.get("spacy_llama_id"), doc.text, doc.to_json()["tokens"]))
    return out


def test_a_pipeline_that_cannot_be_built_is_reported(
    ray_cluster: Any, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, tmp_path / "no_such_model")
    out = tmp_path / "out.jsonl"
    args = ["annotate", str(config), str(corpus), str(out), "--ray", "--workers", "1"]
    code = main([*args, "--quiet"])
    assert code == 2
    # Ray logs its own traceback; ours is the one-line message the local command prints.
    last = capsys.readouterr().err.strip().splitlines()
    ours = [line for line in last if line.startswith("[spacy-llama] annotate: error:")]
    assert len(ours) == 1 and "Could not build the pipeline" in ours[0]
    assert any("no_such_model" in line and "does not exist" in line for line in last)


def test_input_and_option_errors_come_before_ray_starts(tmp_path: Path, corpus: Path) -> None:
    config = config_file(tmp_path, tmp_path / "model")
    with pytest.raises(AnnotateError, match="--workers"):
        annotate_ray(options(config, corpus, tmp_path / "o.jsonl", n_process=2), RayOptions())
    with pytest.raises(AnnotateError, match="must end in .jsonl or .spacy"):
        annotate_ray(options(config, corpus, tmp_path / "o.txt"), RayOptions())
    with pytest.raises(PipelineError, match="does not exist"):
        annotate_ray(options(tmp_path / "missing.cfg", corpus, tmp_path / "o.jsonl"), RayOptions())
