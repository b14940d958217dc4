"""Prompt templates: every failure is a TemplateError naming the template and its line,
whether Jinja raises it or Python does (while rendering, or reading the file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy

from spacy_llama.errors import TemplateError
from spacy_llama.tasks.prompt import PromptTemplate

from ..fixtures.helpers import tiny_llama_config


@pytest.mark.parametrize(
    "source,line,error",
    [
        ("Text: {{ text }}\n\n{{ 1/0 }}", 3, "ZeroDivisionError: division by zero"),
        ("{{ text }}\n{{ text + 1 }}", 2, "TypeError"),
        ("{{ text }}\n{{ tokens[99] }}", 2, "UndefinedError"),
    ],
)
def test_render_error_names_template_and_line(source: str, line: int, error: str) -> None:
    template = PromptTemplate(source, name="'p.jinja'")
    with pytest.raises(TemplateError, match=r"\[E202\]") as e:
        template.render(text="abc", tokens=[])
    assert f"Prompt template 'p.jinja' failed to render at line {line}: {error}" in str(e.value)


def test_python_error_at_render_fails_the_pipe_build(tiny_hf: Path) -> None:
    """ZeroDivisionError used to escape as it is, without the template or its line."""
    cfg = tiny_llama_config(tiny_hf, template="{{ text }}\n{{ 1/0 }}")
    with pytest.raises(TemplateError, match=r"'template' \(inline in the config\).*at line 2"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_latin1_template_file_names_file_and_line(tiny_hf: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jinja"
    path.write_bytes("Summarize:\n{{ text }}\nR\u00e9sum\u00e9:".encode("latin-1"))
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"]["template_path"] = str(path)
    with pytest.raises(TemplateError, match=r"\[E203\]") as e:
        spacy.blank("en").add_pipe("llama", config=cfg)
    assert repr(str(path)) in str(e.value) and "not valid UTF-8 (line 3" in str(e.value)


def test_template_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"\[E204\].*cannot be read") as e:
        PromptTemplate.load("", tmp_path)
    assert repr(str(tmp_path)) in str(e.value)


def test_utf8_template_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.jinja"
    path.write_text("R\u00e9sum\u00e9: {{ text }}", encoding="utf-8")
    assert PromptTemplate.load("", path).render(text="x") == "R\u00e9sum\u00e9: x"


def test_template_and_template_path_together_is_an_error(tmp_path) -> None:
    """Before, the file won silently over an explicit inline template."""
    from spacy.util import registry

    file = tmp_path / "prompt.jinja"
    file.write_text("From the file: {{ text }}")
    for name in ("spacy-llama.Completion.v1", "spacy-llama.Summary.v1", "spacy-llama.NER.v1"):
        block = {"@llama_tasks": name, "template": "Inline: {{ text }}", "template_path": str(file)}
        if name == "spacy-llama.NER.v1":
            block["labels"] = ["PERSON"]
        with pytest.raises(TemplateError, match="E803"):
            registry.resolve({"task": block})
    # A block that only names a file still gets it (spaCy merges the default template in).
    only_file = {"@llama_tasks": "spacy-llama.Completion.v1", "template_path": str(file)}
    task = registry.resolve({"task": only_file})["task"]
    assert task.template.render(text="x") == "From the file: x"


def test_a_component_that_only_names_a_template_file_uses_it(tmp_path, tiny_hf) -> None:
    file = tmp_path / "prompt.jinja"
    file.write_text("From the file: {{ text }}")
    config = tiny_llama_config(tiny_hf)
    config["task"] = {"@llama_tasks": "spacy-llama.Completion.v1", "template_path": str(file)}
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("llama", config=config)
    assert pipe.task.template.render(text="x") == "From the file: x"
