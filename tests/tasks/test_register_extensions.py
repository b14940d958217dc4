"""``spacy_llama.register_extensions``: a DocBin written by ``annotate --docbin`` reads back
in a fresh process (no E046), from the config alone (no model loaded) or after
``spacy.load`` of the pipeline, which registers them by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy

import spacy_llama
from spacy_llama.errors import UsageError

from ..fixtures.corpus_files import corpus, run, write_jsonl
from ..fixtures.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]

READ_BACK = """
import json, sys
from pathlib import Path
import spacy
from spacy.tokens import DocBin
how, config, folder = sys.argv[1:4]
if how == "register":
    import spacy_llama
    spacy_llama.register_extensions(config)
    nlp = spacy.blank("en")
elif how == "load":
    nlp = spacy.load(config)
else:
    nlp = spacy.blank("en")
out = []
for part in sorted(Path(folder).glob("*.spacy")):
    for doc in DocBin().from_disk(part).get_docs(nlp.vocab):
        try:
            out.append(doc._.llama_completion)
        except AttributeError as e:
            out.append("ERROR " + str(e)[:60])
print(json.dumps(out))
"""


def _read_back(how: str, config: Path, folder: Path) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", READ_BACK, how, str(config), str(folder)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_docbin_output_reads_back_with_one_call_or_spacy_load(
    tmp_path: Path, tiny_hf: Path
) -> None:
    config = write_config(tmp_path, tiny_hf)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(3))
    out = tmp_path / "out.spacy"
    run(config, inp, out)
    plain = _read_back("none", config, out)
    assert len(plain) == 3 and all(v.startswith("ERROR [E046]") for v in plain)
    registered = _read_back("register", config, out)
    assert len(registered) == 3 and all(isinstance(v, str) and v for v in registered)
    assert not any(v.startswith("ERROR") for v in registered)
    pipeline = tmp_path / "pipeline"
    nlp = spacy.util.load_model_from_config(spacy.util.load_config(config), auto_fill=True)
    nlp.to_disk(pipeline)
    assert _read_back("load", pipeline, out) == registered


def test_register_extensions_names_what_each_task_writes(tmp_path: Path) -> None:
    configs = ROOT / "configs"
    assert spacy_llama.register_extensions(configs / "entity_review.cfg") == [
        "span._.llama_label",
        "span._.llama_scores",
    ]
    assert spacy_llama.register_extensions(configs / "surprisal.cfg") == [
        "token._.llama_logprob",
        "doc._.llama_perplexity",
    ]
    with pytest.raises(UsageError, match="E801"):
        spacy_llama.register_extensions(42)
