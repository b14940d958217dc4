"""The shipped configs of the structured tasks resolve to their tasks (schema checked,
span fields valid) without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config, registry

import spacy_llama.tasks.extract  # noqa: F401  (registers the three tasks)
import spacy_llama.tasks.ner_v2  # noqa: F401
import spacy_llama.tasks.rel  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name,task_name,extensions",
    [
        ("extract.cfg", "ExtractTask", ["llama_data", "llama_data_confidence", "llama_finish"]),
        ("ner_v2.cfg", "NERv2Task", ["llama_ner_overlaps", "llama_finish"]),
        ("rel.cfg", "RELTask", ["llama_relations", "llama_finish"]),
    ],
)
def test_shipped_config_resolves(name, task_name, extensions):
    cfg = load_config(ROOT / "configs" / name, interpolate=False)
    assert cfg["components"]["llama"]["model"]["@llama_models"] == "spacy-llama.SmolLM2.v1"
    task = registry.resolve({"task": cfg["components"]["llama"]["task"]})["task"]
    assert type(task).__name__ == task_name and task.extensions == extensions


def test_extract_config_schema_restricts_its_span_fields():
    cfg = load_config(ROOT / "configs" / "extract.cfg", interpolate=False)
    task = registry.resolve({"task": cfg["components"]["llama"]["task"]})["task"]
    doc = spacy.blank("en")("Claire Hollis runs Hollis & Grant in Leeds.")
    schema = task.schema_for(doc)
    for field in ("people", "places", "organisations"):
        assert "Hollis & Grant" in schema["properties"][field]["items"]["enum"]
    assert "enum" not in json.dumps(schema["properties"]["summary"])
