"""``python -m spacy_llama distill`` end to end on the tiny model: a textcat teacher (its
real label scores) and a NER teacher (hand-made, token-scored answers) each give a student
that ``spacy.load`` loads, with no LLM in it, a review queue, the data and a report."""

from __future__ import annotations

import json
import math

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_llama.cli import main

from .builders import TEXTS, ner_answers, read_jsonl, teacher_config, write_gold, write_input

FAST = ["--max-steps", "2", "--eval-frequency", "1", "--quiet"]


def test_textcat_teacher_to_a_loadable_student(tiny_hf, tmp_path) -> None:
    out = tmp_path / "out"
    cfg, inp, gold = teacher_config(tmp_path, tiny_hf), write_input(tmp_path), write_gold(tmp_path)
    argv = [str(cfg), str(inp), str(out), "--student", "textcat", "--gold", str(gold)]
    assert main(["distill", *argv, "--curve", "0.5", *FAST]) == 0

    student = spacy.load(out / "student" / "model-best")
    assert student.pipe_names == ["textcat"]
    doc = student("Acme won the match in Oslo.")
    assert set(doc.cats) == {"sport", "business"}
    assert doc.cats["sport"] + doc.cats["business"] == pytest.approx(1.0)

    # step 1: every doc annotated once, with the teacher's probabilities
    preds = read_jsonl(out / "annotations.predictions.jsonl")
    assert [p["id"] for p in preds] == [f"d{i}" for i in range(len(TEXTS))]
    for p in preds:
        assert p["confidence"] == max(p["cats"].values())
    # step 2: the least confident ceil(0.2 * 8) = 2 docs, least confident first
    queue = read_jsonl(out / "review.jsonl")
    ranked = sorted(preds, key=lambda p: p["confidence"])
    assert [q["meta"]["id"] for q in queue] == [p["id"] for p in ranked[:2]]
    assert queue[0]["meta"]["score"] <= queue[1]["meta"]["score"]
    assert queue[0]["options"] == [
        {"id": "sport", "text": "sport"},
        {"id": "business", "text": "business"},
    ]
    studio = json.loads((out / "review.label-studio.json").read_text())
    assert [t["data"]["id"] for t in studio] == [q["meta"]["id"] for q in queue]
    # step 3: all 8 teacher-labelled docs train, the gold set is the dev set
    vocab = spacy.blank("en").vocab
    train = list(DocBin().from_disk(out / "train.spacy").get_docs(vocab))
    dev = list(DocBin().from_disk(out / "dev.spacy").get_docs(vocab))
    assert len(train) == 8 and len(dev) == 4
    by_text = {p["text"]: p for p in preds}
    for doc in train:
        top = max(by_text[doc.text]["cats"], key=by_text[doc.text]["cats"].get)
        assert doc.cats == {k: float(k == top) for k in ("sport", "business")}
    # step 5: the report
    report = json.loads((out / "report.json").read_text())
    assert report["eval_docs"] == 4
    assert 0.0 <= report["teacher"]["scores"]["f"] <= 1.0
    assert 0.0 <= report["student"]["scores"]["f"] <= 1.0
    assert report["student"]["docs_per_second"] > 0 and report["teacher"]["docs_per_second"] > 0
    assert report["student"]["size_bytes"] > 0
    assert [c["fraction"] for c in report["learning_curve"]] == [0.5, 1.0]
    assert report["learning_curve"][0]["docs"] == 4
    assert sum(b["n"] for b in report["calibration"]["bins"]) == 4  # one per gold doc
    q = report["calibration"]["queue"]
    assert (q["docs_in"], q["docs_out"]) == (1, 3)  # ceil(0.2 * 4) gold docs in the queue
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Least confident documents" in html and "<script" not in html


@pytest.mark.parametrize("student", ["ner", "spancat"])
def test_ner_teacher_scores_spans_and_trains_a_student(
    tiny_hf, tmp_path, monkeypatch, student
) -> None:
    ner_answers(monkeypatch, tiny_hf)
    out = tmp_path / "out"
    cfg, inp, gold = (
        teacher_config(tmp_path, tiny_hf, "ner"),
        write_input(tmp_path),
        write_gold(tmp_path),
    )
    argv = [
        str(cfg),
        str(inp),
        str(out),
        "--student",
        student,
        "--gold",
        str(gold),
        "--review-fraction",
        "0.25",
    ]
    assert main(["distill", *argv, "--curve", "", *FAST]) == 0

    preds = {p["id"]: p for p in read_jsonl(out / "annotations.predictions.jsonl")}
    # "Acme won the match in Oslo." -> "CITY: Oslo\nCOMPANY: Acme": each line's score is the
    # product of its tokens' probabilities (token k has log-probability -0.05 * (k + 1))
    d0 = preds["d0"]
    spans = {(a, b, label): s for a, b, label, s in d0["spans"]}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_hf))
    answer = "CITY: Oslo\nCOMPANY: Acme"
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    ends = [len(tok.decode(ids[: k + 1])) for k in range(len(ids))]
    starts = [0] + ends[:-1]

    def line_score(a: int, b: int) -> float:
        return math.exp(
            sum(-0.05 * (k + 1) for k in range(len(ids)) if starts[k] < b and a < ends[k])
        )

    oslo, acme = spans[(22, 26, "CITY")], spans[(0, 4, "COMPANY")]
    assert oslo == pytest.approx(line_score(0, 10))
    assert acme == pytest.approx(line_score(11, 24))
    assert oslo > acme
    assert d0["confidence"] == acme  # the least sure span
    # the queue: Prodigy spans with token offsets and scores
    queue = read_jsonl(out / "review.jsonl")
    assert len(queue) == 2
    for task in queue:
        for span in task["spans"]:
            assert set(span) >= {"start", "end", "token_start", "token_end", "label", "score"}
    nlp = spacy.load(out / "student" / "model-best")
    assert nlp.pipe_names == [student]
    assert set(nlp.get_pipe(student).labels) == {"CITY", "COMPANY"}  # type: ignore[attr-defined]
    train = list(DocBin().from_disk(out / "train.spacy").get_docs(nlp.vocab))
    d0 = next(d for d in train if d.text == TEXTS[0])
    found = d0.ents if student == "ner" else d0.spans["sc"]
    assert sorted((s.text, s.label_) for s in found) == [("Acme", "COMPANY"), ("Oslo", "CITY")]
    assert json.loads((out / "report.json").read_text())["calibration"]["unit"] == "span"


def test_corrections_replace_the_teachers_labels_and_retrain(tiny_hf, tmp_path) -> None:
    out = tmp_path / "out"
    cfg, inp = teacher_config(tmp_path, tiny_hf), write_input(tmp_path)
    argv = ["distill", str(cfg), str(inp), str(out), "--student", "textcat", "--curve", "", *FAST]
    assert main(argv) == 0
    first = (out / "student" / "model-best" / "meta.json").stat().st_mtime_ns
    queue = read_jsonl(out / "review.jsonl")
    # the reviewer flips the first queued doc's label and rejects the second (prodigy db-out)
    flipped = {"sport": "business", "business": "sport"}[queue[0]["accept"][0]]
    corrected = [
        dict(queue[0], accept=[flipped], answer="accept"),
        dict(queue[1], answer="reject"),
    ]
    path = tmp_path / "db-out.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in corrected))
    assert main([*argv, "--corrections", str(path)]) == 0

    vocab = spacy.blank("en").vocab
    docs = list(DocBin(store_user_data=True).from_disk(out / "train.spacy").get_docs(vocab))
    docs += list(DocBin(store_user_data=True).from_disk(out / "dev.spacy").get_docs(vocab))
    by_id = {d.user_data["spacy_llama_id"]: d for d in docs}
    assert len(by_id) == 7  # 8 docs, one rejected
    assert queue[1]["meta"]["id"] not in by_id
    assert by_id[queue[0]["meta"]["id"]].cats[flipped] == 1.0
    state = json.loads((out / "distill.json").read_text())["done"]
    assert state["data"]["corrected"] == 2
    assert (out / "student" / "model-best" / "meta.json").stat().st_mtime_ns != first


@pytest.mark.parametrize("from_scratch", [False, True])
def test_ner_student_starts_from_the_teachers_ner(
    tiny_hf, tmp_path, monkeypatch, from_scratch
) -> None:
    """With en_core_web_sm's NER in the teacher pipeline, the ner student is that NER trained
    on the teacher's labels (it still knows en_core_web_sm's own labels); --from-scratch
    trains a new one that knows only the teacher's."""
    ner_answers(monkeypatch, tiny_hf)
    out = tmp_path / "out"
    cfg = teacher_config(tmp_path, tiny_hf, "ner", sourced_ner=True)
    inp, gold = write_input(tmp_path), write_gold(tmp_path)
    argv = [str(cfg), str(inp), str(out), "--student", "ner", "--gold", str(gold)]
    argv += ["--from-scratch"] if from_scratch else []
    assert main(["distill", *argv, "--curve", "", *FAST]) == 0

    nlp = spacy.load(out / "student" / "model-best")
    assert nlp.pipe_names == ["ner"]
    labels = set(nlp.get_pipe("ner").labels)  # type: ignore[attr-defined]
    assert {"CITY", "COMPANY"} <= labels
    assert ("PERSON" in labels) is not from_scratch  # en_core_web_sm's labels
