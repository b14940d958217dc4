"""spacy-llm finds spacy-llama.SpacyLLM.v1 (and TokenCounter.v1) through entry points, in
a fresh interpreter that never imported spacy_llama."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
assert "spacy_llama" not in sys.modules
import spacy
nlp = spacy.blank("en")
model = {"@llama_models": "spacy-llama.HF.v1", "path": sys.argv[1], "device": "cpu"}
nlp.add_pipe("llm_textcat", config={
    "task": {"@llm_tasks": "spacy.TextCat.v3", "labels": ["sport", "politics"]},
    "model": {"@llm_models": "spacy-llama.SpacyLLM.v1", "model": model,
              "generation": {"max_new_tokens": 2}},
})
doc = nlp("The match ended in a draw.")
from spacy.util import registry
print(json.dumps({
    "model": type(nlp.get_pipe("llm_textcat")._model).__module__,
    "cats": sorted(doc.cats),
    "counter": registry.llm_misc.get("spacy-llama.TokenCounter.v1").__module__,
}))
"""


def test_spacy_llm_finds_the_backend_by_entry_point(tiny_long):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_long)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model"] == "spacy_llama.llm_compat.backend"
    assert out["counter"] == "spacy_llama.llm_compat.backend"
    assert out["cats"] == ["politics", "sport"]
