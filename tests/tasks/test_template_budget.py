"""Templates render within a time and size budget (issue 21, item 6): a chat template in a
model's files, or a prompt template, with an endless loop or a runaway string used to hang
the pipeline build or allocate gigabytes; now each is a coded error naming its source.
The budgets are lowered here so that the tests stay short."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import spacy

from spacy_llama import rendering
from spacy_llama.errors import TemplateError
from spacy_llama.tasks.prompt import PromptTemplate

from ..fixtures.helpers import tiny_llama_config

LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
BIG = "{{ 'x' * 10000000000 }}"
GROWING = "{% for i in range(100000) %}{{ 'abcdefghij' * 1000 }}{% endfor %}"


@pytest.fixture(autouse=True)
def short_budget(monkeypatch: Any) -> None:
    monkeypatch.setattr(rendering, "TEMPLATE_SECONDS", 1.0)
    monkeypatch.setattr(rendering.time_budget, "__defaults__", (1.0, rendering.TEMPLATE_FILES))


@pytest.mark.parametrize("source", [LOOP, BIG, GROWING])
def test_prompt_template_beyond_its_budget_is_a_coded_error(source: str) -> None:
    template = PromptTemplate(source, name="'template' (inline in the config)")
    with pytest.raises(TemplateError, match=r"\[E613\].*inline in the config"):
        template.render(text="hello")  # it used to run for hours, or allocate 10 GB


def test_sound_templates_render_as_before() -> None:
    template = PromptTemplate("{% for w in text.split() %}[{{ w * 2 }}]{% endfor %}{{ 2 ** 10 }}")
    assert template.render(text="a b") == "[aa][bb]1024"


def _model_with_chat_template(tiny_hf: Path, tmp_path: Path, template: str) -> Path:
    folder = Path(shutil.copytree(tiny_hf, tmp_path / "model"))
    import json

    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in folder.glob("chat_template.j*"):
        extra.unlink()
    return folder


@pytest.mark.parametrize("body", [LOOP, BIG])
def test_hostile_chat_template_stops_the_build_with_its_source(
    tiny_hf: Path, tmp_path: Path, body: str
) -> None:
    folder = _model_with_chat_template(tiny_hf, tmp_path, body)
    nlp = spacy.blank("en")
    with pytest.raises(TemplateError, match=r"\[E614\].*model"):
        nlp.add_pipe("llama", config=tiny_llama_config(folder, chat=True))
        nlp("A short text.")
