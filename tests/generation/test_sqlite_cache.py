"""``spacy-llama.SQLiteCache.v1``: round trips, sharing between processes, rebuilding a
corrupt file, and what it saves an annotate run (hits on a rerun, misses on any change)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

import pytest
from spacy.util import load_config, load_model_from_config

from spacy_llama.generation.sqlite_cache import SQLiteCache, sqlite_cache_v1
from spacy_llama.registry import llama_caches

from ..fixtures.corpus_files import corpus, read_jsonl, run, write_jsonl
from ..fixtures.helpers import write_config
from ..fixtures.tiny import make_tiny_hf

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_and_misses(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "sub" / "c.sqlite")  # missing folders are created
    assert cache.get_many(["a"]) == {}
    value = {"text": "hé", "token_ids": [1, 2], "logprobs": [-0.5], "finish_reason": "eos"}
    cache.put_many({"a": value, "b": {"text": ""}})
    assert cache.get_many(["a", "b", "c"]) == {"a": value, "b": {"text": ""}}
    assert len(cache) == 2
    mode = sqlite3.connect(str(cache.path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_many_keys_span_several_statements(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "c.sqlite")
    items = {f"k{i}": {"i": i} for i in range(1234)}  # more than one IN (...) chunk
    cache.put_many(items)
    assert cache.get_many(list(items) + ["missing"]) == items


def test_registered_and_built_from_a_pipeline_config(tmp_path: Path, tiny_hf: Path) -> None:
    assert llama_caches.get("spacy-llama.SQLiteCache.v1") is sqlite_cache_v1
    config_path = write_config(tmp_path, tiny_hf)
    block = f'\n[components.llama.cache]\n@llama_caches = "spacy-llama.SQLiteCache.v1"\n' \
            f"path = {json.dumps(str(tmp_path / 'cfg.sqlite'))}\n"
    config_path.write_text(config_path.read_text() + block)
    nlp = load_model_from_config(load_config(config_path), auto_fill=True)
    engine = nlp.get_pipe("llama").engine  # type: ignore[attr-defined]
    assert isinstance(engine.cache, SQLiteCache) and engine.cache.path == tmp_path / "cfg.sqlite"
    nlp("London is big.")
    assert len(engine.cache) == 1


def test_corrupt_file_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = SQLiteCache(path)
    with pytest.warns(UserWarning, match="unusable"):
        assert cache.get_many(["a"]) == {}
    cache.put_many({"a": {"x": 1}})
    assert SQLiteCache(path).get_many(["a"]) == {"a": {"x": 1}}
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))  # the old file is kept for a look


def test_file_corrupted_between_uses_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = SQLiteCache(path)
    cache.put_many({"a": {"x": 1}})
    cache.close()
    for side in tmp_path.glob("c.sqlite-*"):
        side.unlink()
    data = bytearray(path.read_bytes())
    data[:100] = b"\xff" * 100  # header gone
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="unusable"):
        cache.put_many({"b": {"x": 2}})
    assert cache.get_many(["a", "b"]) == {"b": {"x": 2}}


def test_bad_json_value_is_a_miss(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "c.sqlite")
    cache.put_many({"a": {"x": 1}})
    conn = sqlite3.connect(str(cache.path))
    with conn:
        conn.execute("UPDATE responses SET value = '{broken' WHERE key = 'a'")
    assert cache.get_many(["a"]) == {}


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spacy_llama.generation.sqlite_cache import SQLiteCache
    cache = SQLiteCache(sys.argv[1])
    who = sys.argv[2]
    folder = Path(sys.argv[1]).parent
    (folder / f"ready-{who}").touch()
    while len(list(folder.glob("ready-*"))) < 2:  # start together, so writes overlap
        time.sleep(0.01)
    for start in range(0, 1000, 10):
        cache.put_many({f"k{i}": {"i": i, "by": who} for i in range(start, start + 10)})
        cache.put_many({f"{who}{i}": {"i": i} for i in range(start, start + 10)})
        assert len(cache.get_many([f"k{i}" for i in range(start)])) == start
    """
)


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    env = {"PYTHONPATH": str(ROOT), "PATH": ""}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), who], env=env,
                         stderr=subprocess.PIPE)
        for who in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=80)
        assert proc.returncode == 0, err.decode()
    cache = SQLiteCache(path)
    keys = [f"k{i}" for i in range(1000)] + [f"{w}{i}" for w in "ab" for i in range(1000)]
    got = cache.get_many(keys)
    assert len(got) == 3000
    assert all(got[f"k{i}"]["i"] == i for i in range(1000))


def _fork_child() -> None:
    cache: SQLiteCache = _PARENT_CACHE["cache"]
    cache.put_many({"child": {"pid": 1}})


_PARENT_CACHE: Dict[str, Any] = {}


def test_a_forked_process_opens_its_own_connection(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "c.sqlite")
    cache.put_many({"parent": {"pid": 0}})  # the parent's connection is open now
    _PARENT_CACHE["cache"] = cache
    proc = multiprocessing.get_context("fork").Process(target=_fork_child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert set(cache.get_many(["parent", "child"])) == {"parent", "child"}


# -- what the cache saves an annotate run ---------------------------------------------------
def test_second_run_makes_no_model_calls(tmp_path: Path, tiny_hf: Path) -> None:
    config = write_config(tmp_path, tiny_hf)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(12))
    out = tmp_path / "out.jsonl"
    first = run(config, inp, out)
    assert (first.model_calls, first.cache_hits) == (12, 0)
    assert (tmp_path / "out.jsonl.cache.sqlite").exists()  # the default place
    records = read_jsonl(out)
    second = run(config, inp, out, overwrite=True)
    assert (second.model_calls, second.cache_hits, second.done) == (0, 12, 12)
    assert read_jsonl(out) == records
    third = run(config, inp, out, overwrite=True, no_cache=True)
    assert third.model_calls == 12


def test_any_generation_change_or_another_model_misses(tmp_path: Path, tiny_hf: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(5))
    cache = tmp_path / "shared.sqlite"
    base = write_config(tmp_path, tiny_hf, name="base.cfg")
    assert run(base, inp, tmp_path / "a.jsonl", cache=cache).model_calls == 5
    assert run(base, inp, tmp_path / "b.jsonl", cache=cache).model_calls == 0
    for i, (key, value) in enumerate([("max_new_tokens", 3), ("temperature", 0.7), ("top_k", 5),
                                      ("seed", 1), ("stop", ["."])]):
        overrides = {f"components.llama.generation.{key}": value}
        summary = run(base, inp, tmp_path / f"c{i}.jsonl", cache=cache, overrides=overrides)
        assert summary.model_calls == 5, key
    other = write_config(tmp_path, make_tiny_hf(tmp_path / "other_model", seed=1), name="o.cfg")
    assert run(other, inp, tmp_path / "d.jsonl", cache=cache).model_calls == 5


def test_unwritable_place_turns_the_cache_off_with_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = SQLiteCache(blocker / "c.sqlite")  # its folder cannot be created
    with pytest.warns(UserWarning, match="turned off"):
        cache.put_many({"a": {"x": 1}})
    assert cache.get_many(["a"]) == {} and not cache.enabled
    assert blocker.read_text() == "not a folder"
