"""A scoring task on a server backend is refused when the pipeline is built."""

from __future__ import annotations

import pytest
import spacy

from ..fixtures.fake_server import FakeServer


def _config(url: str, task: dict) -> dict:
    return {
        "model": {
            "@llama_models": "spacy-llama.OpenAICompatible.v1",
            "base_url": url,
            "context_length": 2048,
        },
        "task": task,
        "generation": {"max_new_tokens": 4},
    }


def test_scoring_task_on_a_server_fails_at_build_time():
    with FakeServer() as fake:
        task = {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": ["a", "b"], "chat": False}
        with pytest.raises(ValueError, match="server backend cannot.*HF.v1"):
            spacy.blank("en").add_pipe("llama", config=_config(fake.url, task))


def test_completion_task_on_a_server_builds_and_runs():
    with FakeServer() as fake:
        task = {
            "@llama_tasks": "spacy-llama.Completion.v1",
            "template": "{{ text }}",
            "chat": False,
        }
        nlp = spacy.blank("en")
        nlp.add_pipe("llama", config=_config(fake.url, task))
        doc = nlp("hello there world")
        assert doc._.llama_completion.strip() == "world"  # the fake server echoes the last word
