"""Reading corpora (.txt, .jsonl, .spacy, folders), the output files' resume logic, and
each input error reported as a message with its file and line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import DocBin, Span

from spacy_llama.batch.reader import (
    BadLine,
    CorpusError,
    Record,
    in_shard,
    input_files,
    parse_shard,
    read_corpus,
)
from spacy_llama.batch.sinks import DocBinSink, JsonlSink, scan_jsonl
from spacy_llama.cli import main
from spacy_llama.errors import RunStateError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config

VOCAB = spacy.blank("en").vocab


def items(path: Path) -> List[Any]:
    return list(read_corpus(path, vocab=VOCAB))


def test_txt_one_doc_a_line_with_stable_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffFirst doc.\r\n\n  \nSecond – doc.\nThird".encode())
    got = items(path)
    assert [(r.id, r.text) for r in got] == [
        ("a.txt:1", "First doc."), ("a.txt:4", "Second – doc."), ("a.txt:5", "Third")
    ]
    assert got[0].fields == {"text": "First doc."}


def test_jsonl_keeps_id_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [
        {"id": 3, "text": "x", "meta": {"k": [1]}},
        {"text": "y", "lang": "de"},
        {"id": "z9", "text": ""},
    ])
    got = items(path)
    assert [(r.id, r.raw_id) for r in got] == [("3", 3), ("b.jsonl:2", "b.jsonl:2"), ("z9", "z9")]
    assert got[0].fields == {"text": "x", "meta": {"k": [1]}}
    assert got[1].fields == {"text": "y", "lang": "de"}


def test_folder_is_walked_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two\n")
    (tmp_path / "a.txt").write_text("one\n")
    write_jsonl(tmp_path / "b" / "1.jsonl", [{"text": "three"}])
    (tmp_path / ".hidden" / "x.txt").write_text("hidden\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    assert [r.id for r in items(tmp_path)] == ["a.txt:1", "b/1.jsonl:1", "b/2.txt:1"]


def test_docbin_input_keeps_annotations_and_ids(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    doc = nlp("Apple is in Cupertino.")
    doc.ents = [Span(doc, 0, 1, label="ORG")]
    db.add(doc)
    tagged = nlp("Tagged.")
    tagged.user_data["spacy_llama_id"] = "t1"
    db.add(tagged)
    db.to_disk(tmp_path / "g.spacy")
    got = items(tmp_path / "g.spacy")
    assert [r.id for r in got] == ["g.spacy#1", "t1"]
    assert got[0].doc is not None and [e.label_ for e in got[0].doc.ents] == ["ORG"]


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"text": "ok", ', "invalid JSON"),
        ('["text"]', "expected a JSON object"),
        ('{"txt": "typo"}', 'no "text"'),
        ('{"text": "x", "id": [1]}', '"id" must be'),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + '\n{"text": "also fine"}\n')
    got = items(path)
    assert isinstance(got[0], Record) and isinstance(got[2], Record)
    assert isinstance(got[1], BadLine) and got[1].source == "c.jsonl:2"
    assert reason in got[1].reason


def test_non_utf8_line_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"ok\n" + "café\n".encode("latin-1"))
    got = items(path)
    assert isinstance(got[1], BadLine) and got[1].source == "latin.txt:2"
    assert "UTF-8" in got[1].reason


def test_input_files_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        input_files(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="holds no"):
        input_files(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unknown extension"):
        input_files(tmp_path / "x.csv")
    (tmp_path / "broken.spacy").write_bytes(b"not a docbin")
    with pytest.raises(CorpusError, match="not a readable spaCy DocBin"):
        items(tmp_path / "broken.spacy")


def test_shards_are_disjoint_and_cover() -> None:
    ids = [f"doc-{i}" for i in range(1000)]
    slices = [{i for i in ids if in_shard(i, (k, 4))} for k in range(1, 5)]
    assert sum(len(s) for s in slices) == 1000 and set().union(*slices) == set(ids)
    assert all(150 < len(s) < 350 for s in slices)  # roughly even
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1/"):
        with pytest.raises(CorpusError):
            parse_shard(bad)


# -- output files -------------------------------------------------------------------------
def test_jsonl_sink_appends_each_id_once(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    sink = JsonlSink(path, resume=False)
    sink.write([("a", {"id": "a"}), ("b", {"id": "b"})])
    sink.close()
    sink = JsonlSink(path, resume=True)
    assert sink.done == {"a", "b"}
    sink.write([("b", {"id": "b"}), ("c", {"id": "c"})])
    sink.close()
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_scan_repairs_only_a_broken_last_line(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "te')
    with pytest.warns(UserWarning, match="half-written"):
        assert [r["id"] for _, r in scan_jsonl(path, repair=True)] == [1, 2]
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'
    path.write_bytes(b'{"id": 1}\nGARBAGE\n{"id": 3}\n')
    with pytest.raises(RunStateError, match="o.jsonl:2"):
        list(scan_jsonl(path, repair=True))


def test_docbin_sink_writes_whole_parts(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    docs = []
    for i in range(5):
        doc = nlp(f"doc {i}")
        doc.user_data["spacy_llama_id"] = f"d{i}"
        doc.user_data["spacy_llama_error"] = None  # bookkeeping never reaches the output
        docs.append((f"d{i}", doc))
    sink = DocBinSink(tmp_path / "o.spacy", resume=False, vocab=nlp.vocab, part_size=2)
    sink.write(docs[:3])
    assert len(list((tmp_path / "o.spacy").glob("part-*.spacy"))) == 2  # d0 d1 | d2
    sink.close()
    again = DocBinSink(tmp_path / "o.spacy", resume=True, vocab=nlp.vocab, part_size=2)
    assert again.done == {"d0", "d1", "d2"}
    again.write(docs)
    again.close()
    parts = sorted((tmp_path / "o.spacy").glob("part-*.spacy"))
    read = [d for p in parts for d in DocBin().from_disk(p).get_docs(nlp.vocab)]
    assert [d.user_data["spacy_llama_id"] for d in read] == [f"d{i}" for i in range(5)]
    assert all("spacy_llama_error" not in d.user_data for d in read)


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
