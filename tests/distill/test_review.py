"""The review queue: who goes in (least confident, rarest label first among equals), and a
Prodigy / Label Studio round trip: the queue as the tool opens it, corrected, read back."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from spacy_llama.distill.corrections import apply_corrections, read_corrections
from spacy_llama.distill.predictions import Prediction
from spacy_llama.distill.review import select_queue, write_queue
from spacy_llama.distill.teacher import Teacher
from spacy_llama.errors import DistillError

NER = Teacher(
    path=Path("t.cfg"),
    component="llama",
    task_name="NER.v1",
    kind="ner",
    labels=["CITY", "COMPANY"],
)
CATS = Teacher(
    path=Path("t.cfg"),
    component="llama",
    task_name="TextCat.v1",
    kind="textcat",
    labels=["sport", "business"],
)


def ner_preds() -> list:
    return [
        Prediction(
            "a",
            "Oslo and Acme.",
            spans=[(0, 4, "CITY", 0.9), (9, 13, "COMPANY", 0.4)],
            confidence=0.4,
        ),
        Prediction("b", "Rome is warm.", spans=[(0, 4, "CITY", 0.4)], confidence=0.4),
        Prediction("c", "Paris is big.", spans=[(0, 5, "CITY", 0.95)], confidence=0.95),
        Prediction("d", "Bergen is wet.", spans=[(0, 6, "CITY", 0.7)], confidence=0.7),
    ]


def test_queue_is_least_confident_first_rarest_label_among_equals() -> None:
    preds = ner_preds()
    # a and b tie at 0.4; a has COMPANY (1 prediction) which is rarer than CITY (4)
    assert [p.id for p in select_queue(preds, NER, 0.5)] == ["a", "b"]
    assert [p.id for p in select_queue(preds, NER, 0.75)] == ["a", "b", "d"]
    assert select_queue(preds, NER, 0.0) == []


def test_prodigy_round_trip_replaces_the_teachers_spans(tmp_path) -> None:
    preds = ner_preds()
    queue = select_queue(preds, NER, 0.5)
    write_queue(queue, NER, tmp_path)
    tasks = [json.loads(x) for x in (tmp_path / "review.jsonl").read_text().splitlines()]
    assert tasks[0]["spans"] == [
        {"start": 0, "end": 4, "label": "CITY", "token_start": 0, "token_end": 0, "score": 0.9},
        {"start": 9, "end": 13, "label": "COMPANY", "token_start": 2, "token_end": 2, "score": 0.4},
    ]
    assert [t["text"] for t in tasks[0]["tokens"]] == ["Oslo", "and", "Acme", "."]
    # what `prodigy db-out` gives after ner.manual: the task with the reviewer's spans
    tasks[0]["spans"] = [
        {"start": 0, "end": 4, "label": "CITY"},
        {"start": 9, "end": 13, "label": "CITY"},
    ]
    tasks[0]["answer"] = "accept"
    tasks[1]["answer"] = "reject"
    corrected = tmp_path / "db-out.jsonl"
    corrected.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    fixes = read_corrections(corrected, queue, NER)
    assert fixes["a"] is not None and fixes["a"].spans == [
        (0, 4, "CITY", 1.0),
        (9, 13, "CITY", 1.0),
    ]
    assert fixes["b"] is None  # rejected: left out of the training data
    out = apply_corrections(preds, fixes)
    assert [p.id for p in out] == ["a", "c", "d"]
    assert out[0].spans[1][2] == "CITY"


def test_label_studio_round_trip(tmp_path) -> None:
    preds = [
        Prediction("x", "Oslo won.", cats={"sport": 0.55, "business": 0.45}, confidence=0.55),
        Prediction("y", "Acme fell.", cats={"sport": 0.1, "business": 0.9}, confidence=0.9),
    ]
    queue = select_queue(preds, CATS, 0.5)
    write_queue(queue, CATS, tmp_path)
    tasks = json.loads((tmp_path / "review.label-studio.json").read_text())
    assert tasks == [
        {
            "data": {"id": "x", "text": "Oslo won."},
            "predictions": [
                {
                    "model_version": "spacy-llama teacher",
                    "score": 0.55,
                    "result": [
                        {
                            "id": "x-cats",
                            "from_name": "label",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": ["sport"]},
                        }
                    ],
                }
            ],
        }
    ]
    prodigy = json.loads((tmp_path / "review.jsonl").read_text())
    assert prodigy["accept"] == ["sport"] and prodigy["meta"] == {"id": "x", "score": 0.55}
    # a Label Studio export: the reviewer chose "business"
    result = [dict(tasks[0]["predictions"][0]["result"][0], value={"choices": ["business"]})]
    export = [
        {
            "id": 1,
            "data": tasks[0]["data"],
            "annotations": [{"result": result, "was_cancelled": False}],
        }
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    fixes = read_corrections(path, queue, CATS)
    assert fixes["x"] is not None and fixes["x"].cats == {"sport": 0.0, "business": 1.0}
    # the labelling config the tasks are written for: its names are the results' names
    view = ElementTree.fromstring((tmp_path / "review.label-studio.xml").read_text())
    choices = view.find("Choices")
    assert (
        choices is not None and choices.get("name") == "label" and choices.get("toName") == "text"
    )
    assert [c.get("value") for c in choices] == ["sport", "business"]
    assert choices.get("choice") == "single"
    assert view.find("Text").get("name") == "text"  # type: ignore[union-attr]


def test_a_correction_whose_text_differs_names_the_line(tmp_path) -> None:
    queue = select_queue(ner_preds(), NER, 0.5)
    lines = [
        {"text": "Oslo and Acme.", "spans": [], "meta": {"id": "a"}, "answer": "accept"},
        {"text": "Rome is cold.", "spans": [], "meta": {"id": "b"}, "answer": "accept"},
    ]
    path = tmp_path / "db-out.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(
        DistillError,
        match=r"E704.*line 2: its text differs from the queued text of 'b'.*character 8",
    ):
        read_corrections(path, queue, NER)
    path.write_text(json.dumps({"text": "Paris is big.", "meta": {"id": "c"}}) + "\n")
    with pytest.raises(DistillError, match=r"line 1: id 'c' is not in the queue"):
        read_corrections(path, queue, NER)
    path.write_text("not json\n")
    with pytest.raises(DistillError, match=r"E705"):
        read_corrections(path, queue, NER)


def test_label_studio_round_trip_of_spans(tmp_path) -> None:
    queue = select_queue(ner_preds(), NER, 0.5)
    write_queue(queue, NER, tmp_path)
    tasks = json.loads((tmp_path / "review.label-studio.json").read_text())
    regions = tasks[0]["predictions"][0]["result"]
    assert [(r["value"]["text"], r["value"]["labels"], r["score"]) for r in regions] == [
        ("Oslo", ["CITY"], 0.9),
        ("Acme", ["COMPANY"], 0.4),
    ]
    view = ElementTree.fromstring((tmp_path / "review.label-studio.xml").read_text())
    assert [x.get("value") for x in view.find("Labels")] == ["CITY", "COMPANY"]  # type: ignore[union-attr]
    # the export: the reviewer deleted "Oslo"; the second task was skipped (cancelled)
    export = [
        {"data": tasks[0]["data"], "annotations": [{"result": regions[1:]}]},
        {"data": tasks[1]["data"], "annotations": [{"result": [], "was_cancelled": True}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    fixes = read_corrections(path, queue, NER)
    assert fixes == {"a": Prediction("a", "Oslo and Acme.", spans=[(9, 13, "COMPANY", 1.0)])}
