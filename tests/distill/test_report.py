"""The report's calibration numbers against hand-computed ones: the teacher's error rate in
the review queue vs outside it, per document and, for span tasks, per span."""

from __future__ import annotations

import pytest
import spacy

from spacy_llama.distill.predictions import Prediction
from spacy_llama.distill.report import calibration

from .test_review import CATS, NER


def gold_doc(text: str, ents):
    doc = spacy.blank("en")(text)
    doc.ents = [doc.char_span(a, b, label=label) for a, b, label in ents]
    return doc


def test_span_error_rates_inside_and_outside_the_queue() -> None:
    preds = [
        # queue (least confident half): a and b
        Prediction("a", "Oslo and Acme.", spans=[(0, 4, "CITY", 0.9), (9, 13, "CITY", 0.3)],
                   confidence=0.3),  # fmt: skip
        Prediction("b", "Rome is warm.", spans=[(0, 4, "CITY", 0.4)], confidence=0.4),
        Prediction("c", "Paris is big.", spans=[(0, 5, "CITY", 0.95)], confidence=0.95),
        Prediction("d", "Bergen and Globex.", spans=[(0, 6, "CITY", 0.8)], confidence=0.8),
    ]
    golds = [
        gold_doc("Oslo and Acme.", [(0, 4, "CITY"), (9, 13, "COMPANY")]),  # 1 wrong + 1 missed
        gold_doc("Rome is warm.", [(0, 4, "CITY")]),  # right
        gold_doc("Paris is big.", [(0, 5, "CITY")]),  # right
        gold_doc("Bergen and Globex.", [(0, 6, "CITY"), (11, 17, "COMPANY")]),  # 1 missed
    ]
    q = calibration(preds, golds, NER, "ner", 0.5)["queue"]
    # documents with any error: a (in), d (out)
    assert (q["docs_in"], q["docs_out"]) == (2, 2)
    assert q["error_rate_in"] == pytest.approx(0.5) and q["error_rate_out"] == pytest.approx(0.5)
    # spans: in the queue a has {Oslo ok, Acme CITY wrong, Acme COMPANY missed}, b {Rome ok}:
    # 2 of 4; outside, c {Paris ok}, d {Bergen ok, Globex missed}: 1 of 3
    assert q["span_error_rate_in"] == pytest.approx(2 / 4)
    assert q["span_error_rate_out"] == pytest.approx(1 / 3)
    assert q["span_ratio"] == pytest.approx(1.5)


def test_textcat_has_only_the_document_rate() -> None:
    preds = [
        Prediction("a", "x", cats={"sport": 0.55, "business": 0.45}, confidence=0.55),
        Prediction("b", "y", cats={"sport": 0.9, "business": 0.1}, confidence=0.9),
        Prediction("c", "z", cats={"sport": 0.2, "business": 0.8}, confidence=0.8),
    ]
    nlp = spacy.blank("en")
    golds = [nlp("x"), nlp("y"), nlp("z")]
    for g, label in zip(golds, ["business", "sport", "sport"]):
        g.cats = {"sport": float(label == "sport"), "business": float(label == "business")}
    q = calibration(preds, golds, CATS, "textcat", 1 / 3)["queue"]
    assert q["error_rate_in"] == pytest.approx(1.0)  # a: predicted sport, gold business
    assert q["error_rate_out"] == pytest.approx(0.5)  # c wrong, b right
    assert q["ratio"] == pytest.approx(2.0)
    assert "span_error_rate_in" not in q


def test_a_predicted_label_the_gold_vocab_never_saw_counts_as_wrong() -> None:
    """A ner student that started from en_core_web_sm's NER may still predict its labels
    (NORP, ...), which the gold docs' vocab never saw."""
    from spacy_llama.distill.report import scores

    gold = gold_doc("Oslo and Acme.", [(0, 4, "CITY")])
    pred = spacy.blank("en")("Oslo and Acme.")
    pred.ents = [pred.char_span(0, 4, label="CITY"), pred.char_span(9, 13, label="NOT_IN_GOLD")]
    got = scores([pred], [gold], NER, "ner")
    assert got["p"] == pytest.approx(0.5) and got["r"] == pytest.approx(1.0)
    assert got["per_label"]["NOT_IN_GOLD"]["p"] == 0.0
