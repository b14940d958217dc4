"""Bad input to ``distill`` gets one coded message and exit code 2, before any model runs."""

from __future__ import annotations

import json

import pytest

from spacy_llama.cli import main

from .builders import teacher_config, write_gold, write_input


def run(capsys, *argv: str) -> str:
    assert main(["distill", *argv, "--quiet", "--max-steps", "1", "--curve", ""]) == 2
    return capsys.readouterr().err


def test_teacher_without_llama_component(tmp_path, capsys) -> None:
    cfg = tmp_path / "plain.cfg"
    cfg.write_text(
        '[nlp]\nlang = "en"\npipeline = ["sentencizer"]\n\n[components]\n\n'
        '[components.sentencizer]\nfactory = "sentencizer"\n'
    )
    err = run(
        capsys, str(cfg), str(write_input(tmp_path)), str(tmp_path / "o"), "--student", "textcat"
    )
    assert "[E700]" in err and "has no `llama` component" in err


def test_task_without_labels(tiny_hf, tmp_path, capsys) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "ner")
    cfg.write_text(cfg.read_text().replace('labels = ["CITY","COMPANY"]', "labels = []"))
    err = run(capsys, str(cfg), str(write_input(tmp_path)), str(tmp_path / "o"), "--student", "ner")
    assert "[E701]" in err and "has no labels" in err


def test_student_the_teacher_cannot_feed(tiny_hf, tmp_path, capsys) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    err = run(capsys, str(cfg), str(write_input(tmp_path)), str(tmp_path / "o"), "--student", "ner")
    assert "[E702] A ner student cannot learn from the teacher's task spacy-llama.TextCat.v1" in err
    assert "a textcat teacher -> --student textcat" in err and "--student ner or spancat" in err
    assert not (tmp_path / "o" / "annotations.jsonl").exists()


def test_a_task_that_cannot_be_distilled(tiny_hf, tmp_path, capsys) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    text = cfg.read_text().replace("spacy-llama.TextCat.v1", "spacy-llama.Completion.v1")
    cfg.write_text(
        text.replace(
            'labels = ["sport","business"]\nexclusive = true\n', 'template = "{{ text }}"\n'
        )
    )
    err = run(
        capsys, str(cfg), str(write_input(tmp_path)), str(tmp_path / "o"), "--student", "textcat"
    )
    assert "[E703]" in err and "Completion" in err


def test_too_few_docs_for_a_dev_split(tiny_hf, tmp_path, capsys) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    inp = write_input(tmp_path, ["Only one document here."])
    err = run(capsys, str(cfg), str(inp), str(tmp_path / "o"), "--student", "textcat")
    assert "[E706] Only 1 document(s) have teacher labels" in err and "--gold" in err


def test_review_fraction_out_of_range(tiny_hf, tmp_path, capsys) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    err = run(
        capsys,
        str(cfg),
        str(write_input(tmp_path)),
        str(tmp_path / "o"),
        "--student",
        "textcat",
        "--review-fraction",
        "1.5",
    )
    assert "[E711]" in err


def test_gold_without_the_students_annotation(tiny_hf, tmp_path, capsys) -> None:
    import spacy
    from spacy.tokens import DocBin

    gold = tmp_path / "nocats.spacy"
    DocBin(docs=[spacy.blank("en")("No labels at all.")]).to_disk(gold)
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    err = run(
        capsys,
        str(cfg),
        str(write_input(tmp_path)),
        str(tmp_path / "o"),
        "--student",
        "textcat",
        "--gold",
        str(gold),
    )
    assert "[E709]" in err and "doc.cats" in err


@pytest.mark.parametrize("changed", [["--review-fraction", "0.5"], ["--student", "spancat"]])
def test_a_resume_with_other_settings_is_refused(tiny_hf, tmp_path, capsys, changed) -> None:
    cfg = teacher_config(tmp_path, tiny_hf, "ner")
    out = tmp_path / "o"
    out.mkdir()
    settings = {
        "teacher": str(cfg),
        "input": str(tmp_path / "input.jsonl"),
        "student": "ner",
        "gold": str(tmp_path / "gold.spacy"),
        "review_fraction": 0.2,
        "dev_fraction": 0.2,
        "overrides": {},
    }
    (out / "distill.json").write_text(json.dumps({"settings": settings, "done": {}}))
    argv = [
        str(cfg),
        str(write_input(tmp_path)),
        str(out),
        "--student",
        "ner",
        "--gold",
        str(write_gold(tmp_path)),
    ]
    args = dict(zip(argv[3::2], argv[4::2]))
    args.update(dict([changed]))
    err = run(capsys, *argv[:3], *[x for kv in args.items() for x in kv])
    assert "[E707]" in err and changed[0].lstrip("-").replace("-", "_") in err


def test_a_student_spacy_cannot_train_is_one_message(
    tiny_hf, tmp_path, capsys, monkeypatch
) -> None:
    # spaCy refusing the student's data (its E867: one exclusive label) is reported as E710.
    # A one-label exclusive *teacher* is refused before any work (E830), so spaCy's own
    # refusal is what `spacy train` raises here.
    import spacy.cli.train

    def refuse(*args, **kwargs):
        raise ValueError("[E867] The 'textcat' component requires at least two labels")

    monkeypatch.setattr(spacy.cli.train, "train", refuse)
    cfg = teacher_config(tmp_path, tiny_hf, "textcat")
    out = tmp_path / "o"
    err = run(capsys, str(cfg), str(write_input(tmp_path)), str(out), "--student", "textcat")
    assert "[E710] Training the student" in err and "E867" in err
    # the teacher's work is kept: a fixed config resumes after it
    assert (out / "train.spacy").exists()
    assert "student" not in json.loads((out / "distill.json").read_text())["done"]
