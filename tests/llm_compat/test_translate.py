"""python -m spacy_llama from-spacy-llm: spacy-llm configs -> spacy-llama configs that
assemble (``spacy assemble``) and run on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import spacy
import srsly
from spacy.util import load_config, load_model_from_config

from spacy_llama.cli import main
from spacy_llama.cli.exit_codes import EXIT_OK, EXIT_USAGE

NER_V3_EXAMPLES = [
    {
        "text": "Jack and Jill went up the hill in Kentucky.",
        "spans": [
            {"text": "Kentucky", "is_entity": True, "label": "GPE", "reason": "a state"},
            {"text": "hill", "is_entity": False, "label": "==NONE==", "reason": "a landform"},
            {"text": "Jack", "is_entity": True, "label": "PERSON", "reason": "a name"},
        ],
    }
]
NER_V2_EXAMPLES = [
    {"text": "Jack met Jill in Paris.", "entities": {"PERSON": ["Jack", "Jill"], "GPE": ["Paris"]}}
]
TEXTCAT_EXAMPLES = [
    {"text": "The striker scored twice.", "answer": "sport"},
    {"text": "Parliament passed the bill.", "answer": "politics"},
]
SENTIMENT_EXAMPLES = [{"text": "I loved it.", "score": 0.9}, {"text": "Awful.", "score": 0.1}]

# One spacy-llm component per mapped task: (name, task block lines, what to check).
TASKS: Dict[str, str] = {
    "ner_v1": '@llm_tasks = "spacy.NER.v1"\nlabels = "PERSON,GPE"\n'
    "[components.{name}.task.examples]\n"
    '@misc = "spacy.FewShotReader.v1"\npath = "ner_v2.json"',
    "ner_v3": '@llm_tasks = "spacy.NER.v3"\nlabels = ["PERSON", "GPE"]\n'
    'description = "Names only."\n'
    '[components.{name}.task.label_definitions]\nPERSON = "a person"\n'
    "[components.{name}.task.examples]\n"
    '@misc = "spacy.FewShotReader.v1"\npath = "ner_v3.yml"',
    "spancat_v3": '@llm_tasks = "spacy.SpanCat.v3"\nlabels = ["DISH"]\nspans_key = "food"',
    "textcat_v3": '@llm_tasks = "spacy.TextCat.v3"\nlabels = ["sport", "politics"]\n'
    "exclusive_classes = true\n"
    "[components.{name}.task.examples]\n"
    '@misc = "spacy.FewShotReader.v1"\npath = "textcat.jsonl"',
    "textcat_v1": '@llm_tasks = "spacy.TextCat.v1"\nlabels = "urgent"',
    "rel": '@llm_tasks = "spacy.REL.v1"\nlabels = ["LivesIn"]\n'
    "[components.{name}.task.examples]\n"
    '@misc = "spacy.FewShotReader.v1"\npath = "ner_v2.json"',
    "summary": '@llm_tasks = "spacy.Summarization.v1"\nmax_n_words = 12\nfield = "gist"',
    "sentiment": '@llm_tasks = "spacy.Sentiment.v1"\n'
    "[components.{name}.task.examples]\n"
    '@misc = "spacy.FewShotReader.v1"\npath = "sentiment.json"',
    "raw": '@llm_tasks = "spacy.Raw.v1"\nfield = "reply"\n'
    'template = "Answer briefly: {{{{ text }}}}"',
}
MODEL = (
    '[components.{name}.model]\n@llm_models = "spacy.GPT-3-5.v3"\nname = "gpt-3.5-turbo"\n'
    'config = {{"temperature": 0.0, "max_tokens": 24}}\n'
)


def spacy_llm_config(folder: Path, names: List[str], *, extra: str = "") -> Path:
    srsly.write_json(folder / "ner_v2.json", NER_V2_EXAMPLES)
    srsly.write_yaml(folder / "ner_v3.yml", NER_V3_EXAMPLES)
    srsly.write_jsonl(folder / "textcat.jsonl", TEXTCAT_EXAMPLES)
    srsly.write_json(folder / "sentiment.json", SENTIMENT_EXAMPLES)
    parts = ['[nlp]\nlang = "en"\npipeline = ' + json.dumps(names) + "\n\n[components]\n"]
    for name in names:
        task = TASKS[name].format(name=name)
        parts.append(f'[components.{name}]\nfactory = "llm"\n\n[components.{name}.task]\n{task}\n')
        parts.append(MODEL.format(name=name))
    path = folder / "spacy_llm.cfg"
    path.write_text("\n".join(parts) + extra, encoding="utf-8")
    return path


def translate(folder: Path, names: List[str], tiny: Path, capsys, **kw) -> Path:
    source = spacy_llm_config(folder, names, **kw)
    out = folder / "translated.cfg"
    code = main(["from-spacy-llm", str(source), str(out), "--model-path", str(tiny)])
    assert code == EXIT_OK
    return out


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # spacy-llm reads examples paths from the working folder


TEXT = "Jack and Jill ate pasta in Kentucky. It was a fine day."


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_mapped_task_assembles_and_runs(tmp_path, tiny_long, capsys, name):
    out = translate(tmp_path, [name], tiny_long, capsys)
    printed = capsys.readouterr().out
    cfg = load_config(out)
    comp = cfg["components"][name]
    assert comp["factory"] == "llama"
    assert "carried" in printed or "changed" in printed
    nlp = load_model_from_config(cfg, auto_fill=True)
    nlp.initialize()  # what `spacy assemble` does
    doc = nlp(TEXT)
    task = comp["task"]
    if name.startswith("ner"):
        assert task["@llama_tasks"] == "spacy-llama.NER.v2" and task["labels"] == ["PERSON", "GPE"]
        assert task["merge"] == "prefer_llama"
        assert all(e.label_ in ("PERSON", "GPE") for e in doc.ents)
        examples = list(srsly.read_jsonl(task["examples"]["path"]))
        assert examples[0]["entities"][0] == {"text": "Jack", "label": "PERSON"}  # text order
        if name == "ner_v3":  # the spans that are not entities are left out
            assert [e["text"] for e in examples[0]["entities"]] == ["Jack", "Kentucky"]
            assert task["system"] == "Names only." and task["label_definitions"]
    elif name == "spancat_v3":
        assert task["merge"] == "spans" and task["spans_key"] == "food"
        assert "food" in doc.spans
    elif name == "textcat_v3":
        assert task["@llama_tasks"] == "spacy-llama.TextCat.v3" and task["exclusive"] is True
        assert sorted(doc.cats) == ["politics", "sport"]
        assert abs(sum(doc.cats.values()) - 1.0) < 1e-6
        examples = list(srsly.read_jsonl(task["examples"]["path"]))
        assert examples[0] == {"text": "The striker scored twice.", "labels": ["sport"]}
    elif name == "textcat_v1":  # one label: scored on its own, as spacy-llm's binary mode
        assert task["exclusive"] is False and list(doc.cats) == ["urgent"]
        assert 0.0 < doc.cats["urgent"] < 1.0
    elif name == "rel":
        assert task["@llama_tasks"] == "spacy-llama.REL.v1" and task["labels"] == ["LivesIn"]
        assert isinstance(doc._.llama_relations, list)
    elif name == "summary":
        assert task["max_words"] == 12 and task["summary_attr"] == "gist"
        assert len(doc._.gist.split()) <= 12
    elif name == "sentiment":
        assert task["labels"] == ["positive", "negative"]
        assert sorted(doc.cats) == ["negative", "positive"]
        examples = list(srsly.read_jsonl(task["examples"]["path"]))
        assert [e["labels"] for e in examples] == [["positive"], ["negative"]]
    elif name == "raw":
        assert task["@llama_tasks"] == "spacy-llama.Completion.v1"
        assert task["template"] == "Answer briefly: {{ text }}"
        assert isinstance(doc._.reply, str)
    # carried from the model block: spacy-llm's max_tokens, except where the task needs
    # another: none for scoring, room for a whole JSON answer for the structured tasks
    gen = comp["generation"]
    assert gen["temperature"] == 0.0
    needs = {"spacy-llama.TextCat.v3": 1, "spacy-llama.NER.v2": 320, "spacy-llama.REL.v1": 192}
    assert gen["max_new_tokens"] == needs.get(task["@llama_tasks"], 24)


def test_spacy_assemble_on_every_task_and_one_without_equivalent(tmp_path, tiny_long, capsys):
    """The whole pipeline through `spacy assemble` (a fresh process); a task with no
    equivalent here gets its line and stays on spacy-llm with spacy-llama.SpacyLLM.v1."""
    extra = (
        '\n[components.lemma]\nfactory = "llm_translation"\n\n[components.lemma.task]\n'
        '@llm_tasks = "spacy.Lemma.v1"\n'
    )
    names = sorted(TASKS)
    source = spacy_llm_config(tmp_path, names, extra=extra)
    cfg_text = source.read_text().replace(json.dumps(names), json.dumps(names + ["lemma"]))
    source.write_text(cfg_text)
    out = tmp_path / "translated.cfg"
    assert main(["from-spacy-llm", str(source), str(out), "--model-path", str(tiny_long)]) == 0
    printed = capsys.readouterr().out.splitlines()
    kept = [line for line in printed if "kept on spacy-llm" in line]
    assert len(kept) == 1 and kept[0].startswith("[components.lemma]: kept on spacy-llm")
    no_examples = "[components.rel.task] examples: no equivalent: spacy-llama.REL.v1 takes no"
    assert any(line.startswith(no_examples) for line in printed)
    cfg = load_config(out)
    assert cfg["components"]["lemma"]["model"]["@llm_models"] == "spacy-llama.SpacyLLM.v1"
    assert cfg["components"]["lemma"]["factory"] == "llm"  # spacy-llm's entry point
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", "assemble", str(out), str(tmp_path / "pipeline")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nlp = spacy.load(tmp_path / "pipeline", exclude=["lemma"])
    assert nlp.pipe_names == names
    doc = nlp(TEXT)
    assert {"sport", "politics", "positive", "negative", "urgent"} <= set(doc.cats)


def test_bad_input_gets_one_coded_line(tmp_path, tiny_long, capsys):
    missing = main(["from-spacy-llm", str(tmp_path / "nope.cfg"), str(tmp_path / "o.cfg")])
    assert missing == EXIT_USAGE and "E750" in capsys.readouterr().err
    plain = tmp_path / "plain.cfg"
    plain.write_text(
        '[nlp]\nlang = "en"\npipeline = ["x"]\n[components]\n'
        '[components.x]\nfactory = "sentencizer"\n'
    )
    assert main(["from-spacy-llm", str(plain), str(tmp_path / "o.cfg")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "E751" in err and "sentencizer" in err
    out = translate(tmp_path, ["rel"], tiny_long, capsys)
    source = tmp_path / "spacy_llm.cfg"
    before = out.read_text()
    assert main(["from-spacy-llm", str(source), str(out)]) == EXIT_USAGE
    assert "E752" in capsys.readouterr().err and out.read_text() == before  # not replaced
    assert main(["from-spacy-llm", str(source), str(tmp_path / "o.txt")]) == EXIT_USAGE
    assert "E753" in capsys.readouterr().err
    bad = ["from-spacy-llm", str(source), str(tmp_path / "o.cfg"), "--model-path", str(tmp_path)]
    assert main(bad) == EXIT_USAGE and "E755" in capsys.readouterr().err
    (tmp_path / "textcat.jsonl").write_text("{not json\n")
    source = spacy_llm_config(tmp_path, ["rel"])  # rewrites the example files
    (tmp_path / "ner_v3.yml").write_text("- [unclosed\n")
    cfg = source.read_text().replace('"rel"]', '"rel","ner_v3"]') + "\n[components.ner_v3]\n"
    cfg += 'factory = "llm"\n[components.ner_v3.task]\n' + TASKS["ner_v3"].format(name="ner_v3")
    source.write_text(cfg)
    assert main(["from-spacy-llm", str(source), str(tmp_path / "o.cfg")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "E754" in err and "ner_v3.yml" in err


def test_labels_come_from_the_examples_when_none_are_given(tmp_path, tiny_long, capsys):
    source = spacy_llm_config(tmp_path, ["ner_v3"])
    source.write_text(source.read_text().replace('labels = ["PERSON", "GPE"]\n', ""))
    out = tmp_path / "t.cfg"
    assert main(["from-spacy-llm", str(source), str(out), "--model-path", str(tiny_long)]) == 0
    assert load_config(out)["components"]["ner_v3"]["task"]["labels"] == ["GPE", "PERSON"]
    assert "taken from the examples" in capsys.readouterr().out


def test_a_component_already_on_the_backend_keeps_its_model_block(tmp_path, capsys):
    """configs/spacy_llm/gold.cfg uses spacy-llama.SpacyLLM.v1: its llama model block and
    generation settings carry; a structured task keeps room for its JSON."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gold.cfg"
    assert main(["from-spacy-llm", str(root / "configs/spacy_llm/gold.cfg"), str(out)]) == 0
    printed = capsys.readouterr().out
    cfg = load_config(out)
    ner, textcat = cfg["components"]["llm_ner"], cfg["components"]["llm_textcat"]
    assert ner["model"]["@llama_models"] == "spacy-llama.SmolLM2.v1"
    assert ner["task"]["label_definitions"]["MONEY"] == "an amount of money"
    assert ner["generation"]["max_new_tokens"] == 320  # 256 carried, raised for the JSON
    assert "max_new_tokens: changed: 256 -> 320" in printed
    assert textcat["task"]["@llama_tasks"] == "spacy-llama.TextCat.v3"
    assert textcat["generation"]["max_new_tokens"] == 1
    # labels are scored as written (a words rule, science_tech as "science tech", lost on
    # the gold dev half: docs/spacy_llm.md)
    assert "verbalizers" not in textcat["task"]
    assert "[components.llm_ner.model]: carried: spacy-llama.SpacyLLM.v1" in printed

