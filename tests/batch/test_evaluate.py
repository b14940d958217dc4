"""``python -m spacy_llama evaluate``: P/R/F per label for the llama tasks of a pipeline."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List

import pytest
import srsly
from spacy.tokens import DocBin

from spacy_llama.batch.evaluate import format_scores
from spacy_llama.cli import main
from spacy_llama.generation import scoring
from spacy_llama.types import ScoreRequest, ScoreResult

LABELS = ["business", "sport"]
GOLD = [
    {"text": "Shares fell.", "cats": {"business": 1.0, "sport": 0.0}, "ents": []},
    {
        "text": "Arsenal won in London.",
        "cats": {"business": 0.0, "sport": 1.0},
        "ents": [[0, 7, "ORG"], [15, 21, "GPE"]],
    },
    {"text": "Goal!", "cats": {"business": 0.0, "sport": 1.0}, "ents": []},
]


def write_config(path: Path, tiny_hf: Path, task: str) -> Path:
    path.write_text(
        f"""
[nlp]
lang = "en"
pipeline = ["llama"]

[components]

[components.llama]
factory = "llama"

[components.llama.model]
@llama_models = "spacy-llama.HF.v1"
path = "{tiny_hf}"
device = "cpu"

[components.llama.task]
{task}

[components.llama.generation]
max_new_tokens = 1
"""
    )
    return path


TEXTCAT = '@llama_tasks = "spacy-llama.TextCat.v1"\nlabels = ["business","sport"]\nchat = false'
REVIEW = '@llama_tasks = "spacy-llama.EntityReview.v1"\nlabels = ["ORG","GPE"]\nchat = false'


def sport_if_goal_or_arsenal(self: scoring.Scorer, reqs: List[ScoreRequest]) -> List[ScoreResult]:
    """A fake Scorer that is right on two of the three gold docs."""
    out = []
    for req in reqs:
        sport = "Arsenal" in req.prompt or "Shares" in req.prompt
        values = [-3.0, -0.1] if sport else [-0.1, -3.0]
        out.append(ScoreResult(sums=values, means=values, n_tokens=[1, 1]))
    return out


def test_textcat_per_label_table(tiny_hf, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scoring.Scorer, "score", sport_if_goal_or_arsenal)
    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", str(cfg), str(gold), "--output", str(out_json)]) == 0
    printed = capsys.readouterr().out
    scores = srsly.read_json(out_json)
    # "Shares fell." is called sport, "Goal!" business, "Arsenal won" sport.
    assert scores["cats_f_per_type"]["sport"] == pytest.approx({"p": 0.5, "r": 0.5, "f": 0.5})
    assert scores["cats_f_per_type"]["business"] == pytest.approx({"p": 0.0, "r": 0.0, "f": 0.0})
    assert "documents: 3" in printed
    assert "sport               50.0    50.0    50.0" in printed
    assert printed.strip() == format_scores(scores)


def always_sport(self: scoring.Scorer, reqs: List[ScoreRequest]) -> List[ScoreResult]:
    return [ScoreResult(sums=[-3.0, -0.1], means=[-3.0, -0.1], n_tokens=[1, 1]) for _ in reqs]


def test_a_label_never_predicted_is_warned_and_reported(tiny_hf, tmp_path, capsys, monkeypatch):
    """Issue 26: a label the scores can never pick (business, 0 of its gold docs) is named."""
    monkeypatch.setattr(scoring.Scorer, "score", always_sport)
    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    out_json = tmp_path / "scores.json"
    with pytest.warns(UserWarning, match=r"W831.*'llama'.*\['business'\].*'business': 1"):
        assert main(["evaluate", str(cfg), str(gold), "--output", str(out_json)]) == 0
    assert srsly.read_json(out_json)["llama_never_predicted"] == {"llama": ["business"]}
    assert "never predicted by llama: business" in capsys.readouterr().out


def test_every_label_predicted_no_warning(tiny_hf, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring.Scorer, "score", sport_if_goal_or_arsenal)
    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*W831")
        assert main(["evaluate", str(cfg), str(gold)]) == 0


def test_entity_review_on_docbin_with_limit(tiny_hf, tmp_path, capsys):
    import spacy

    nlp = spacy.blank("en")
    docs = []
    for rec in GOLD:
        doc = nlp.make_doc(rec["text"])
        doc.ents = [doc.char_span(s, e, label=lab) for s, e, lab in rec["ents"]]
        docs.append(doc)
    DocBin(docs=docs).to_disk(tmp_path / "gold.spacy")
    cfg = write_config(tmp_path / "review.cfg", tiny_hf, REVIEW)
    code = main(["evaluate", str(cfg), str(tmp_path / "gold.spacy"), "--limit", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    # A blank pipeline has no upstream NER: nothing to review, recall 0 on both labels.
    assert "documents: 2" in printed and "Entities (exact match)" in printed
    assert "GPE                " in printed and "ORG                " in printed


def test_overrides_and_errors(tiny_hf, tmp_path, capsys):
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    assert main(["evaluate", str(cfg), str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.cfg"), str(cfg)]) == 2
    bad = tmp_path / "bad.jsonl"
    srsly.write_jsonl(bad, [{"text": "Arsenal won.", "ents": [[0, 3, "ORG"]]}])
    assert main(["evaluate", str(cfg), str(bad)]) == 2
    assert "not on token boundaries" in capsys.readouterr().err
    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    # A config override reaches the task: a label list without "sport" (one exclusive
    # label would be 1.0 for every doc: E830, issue 26; as yes/no it is fine).
    override = ["--components.llama.task.labels", '["business"]']
    assert main(["evaluate", str(cfg), str(gold), *override]) == 2
    assert "E830" in capsys.readouterr().err
    code = main(
        ["evaluate", str(cfg), str(gold), *override, "--components.llama.task.exclusive", "false"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "business" in printed and "sport " not in printed


GOOD_LINE = b'{"text": "Arsenal won.", "ents": [[0, 7, "ORG"]]}\n'


@pytest.mark.parametrize(
    "line,code,expected",
    [
        (b'{"text": "Arsenal won."\n', "E220", "invalid JSON"),
        (b'{"cats": {"sport": 1.0}}\n', "E220", 'no "text" string field'),
        (b'["Arsenal won."]\n', "E220", "expected a JSON object"),
        (b'{"text": "Arsenal w\xf6n."}\n', "E220", "not valid UTF-8"),
        (b'{"text": "Arsenal won.", "ents": [[0, 70, "ORG"]]}\n', "E224", "outside the text"),
        (b'{"text": "Arsenal won.", "ents": [[-1, 7, "ORG"]]}\n', "E224", "outside the text"),
        (b'{"text": "Arsenal won.", "ents": [["0", 7, "ORG"]]}\n', "E223", "integer start"),
        (b'{"text": "Arsenal won.", "ents": [[0.0, 7, "ORG"]]}\n', "E223", "integer start"),
        (b'{"text": "Arsenal won.", "ents": [[0, 7, 5]]}\n', "E223", "string label"),
        (b'{"text": "Arsenal won.", "ents": [[0, 7]]}\n', "E222", "[start, end, label]"),
        (b'{"text": "Arsenal won.", "ents": {"ORG": [0, 7]}}\n', "E222", "[start, end, label]"),
        (b'{"text": "Arsenal won.", "ents": [[0, 3, "ORG"]]}\n', "E225", "token boundaries"),
        (
            b'{"text": "Arsenal won.", "ents": [[0, 7, "ORG"], [0, 11, "X"]]}\n',
            "E226",
            "overlap",
        ),
        (b'{"text": "Arsenal won.", "cats": ["sport"]}\n', "E221", "label: score"),
        (b'{"text": "Arsenal won.", "cats": {"sport": "yes"}}\n', "E221", "label: score"),
    ],
)
def test_bad_gold_line_names_file_line_and_fix(
    tiny_hf, tmp_path, capsys, line: bytes, code: str, expected: str
):
    """Each of these raised a traceback (KeyError, TypeError, ValueError, UnicodeDecodeError)
    or was misreported, or (floats, int labels) was silently accepted."""
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(GOOD_LINE + b"\n" + line)  # the bad record is on line 3
    assert main(["evaluate", str(cfg), str(gold)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("[spacy-llama] evaluate: error: ") and len(err.splitlines()) == 1
    assert f"[{code}] Gold file {gold}:3: " in err and expected in err
    assert "Fix" in err or "Move" in err or "Keep one" in err


def test_garbage_docbin_and_folder_gold(tiny_hf, tmp_path, capsys):
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    garbage = tmp_path / "gold.spacy"
    garbage.write_bytes(b"\x00not a docbin\xff" * 10)
    assert main(["evaluate", str(cfg), str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "[E227]" in err and str(garbage) in err and "not a readable spaCy DocBin" in err
    folder = tmp_path / "parts.spacy"
    folder.mkdir()
    assert main(["evaluate", str(cfg), str(folder)]) == 2
    assert "[E228]" in capsys.readouterr().err
