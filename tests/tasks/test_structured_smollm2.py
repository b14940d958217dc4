"""The shipped structured configs on the embedded SmolLM2 (after en_core_web_sm): every
answer on the first docs of corpus/sample.jsonl parses and matches its schema, with no doc
failed (the full 32-doc batch run is reported in docs/tasks.md)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import srsly

import spacy_llama.tasks.extract  # noqa: F401  (registers the three tasks)
import spacy_llama.tasks.ner_v2  # noqa: F401
import spacy_llama.tasks.rel  # noqa: F401
from spacy_llama.batch.loading import load_pipeline
from spacy_llama.types import DOC_ERROR_KEY

ROOT = Path(__file__).resolve().parents[2]
DEVICE = {"components.llama.model.device": "cpu", "components.llama.model.dtype": "float32"}


def sample_texts(n: int) -> list:
    return [r["text"] for r in srsly.read_jsonl(ROOT / "corpus" / "sample.jsonl")][:n]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["extract.cfg", "ner_v2.cfg", "rel.cfg"])
def test_every_smollm2_answer_parses(smollm2, name):
    nlp = load_pipeline(ROOT / "configs" / name, overrides=DEVICE)
    task = nlp.get_pipe("llama").task
    for doc in nlp.pipe(sample_texts(3)):
        assert DOC_ERROR_KEY not in doc.user_data, doc.user_data[DOC_ERROR_KEY]
        if name == "extract.cfg":
            jsonschema.validate(doc._.llama_data, task.schema_for(doc))
            assert all(s.label_ in task.span_fields for s in doc.spans["llama_extract"])
        elif name == "ner_v2.cfg":
            assert doc._.llama_ner_overlaps is not None  # assigned, nothing half-written
            assert {s.label_ for s in doc.spans["llama_ner"]} <= {x.name for x in task.labels}
        else:
            for rel in doc._.llama_relations:
                assert rel["head"] != rel["tail"] and rel["relation"] in task._lookup.values()
