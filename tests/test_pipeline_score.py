"""`nlp.evaluate` (and so `spacy evaluate`) reaches the task's scorer through the pipe."""

from __future__ import annotations

import spacy
from spacy.training import Example

from .fixtures.helpers import tiny_llama_config


def test_nlp_evaluate_reports_task_scores(tiny_hf):
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"] = {
        "@llama_tasks": "spacy-llama.TextCat.v1",
        "labels": ["sport", "business"],
        "chat": False,
    }
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=cfg)
    texts = [("The match ended 2-1.", "sport"), ("Shares fell 3%.", "business")]
    examples = []
    for text, label in texts:
        gold = {"cats": {"sport": float(label == "sport"), "business": float(label == "business")}}
        examples.append(Example.from_dict(nlp.make_doc(text), gold))
    scores = nlp.evaluate(examples)
    assert set(scores["cats_f_per_type"]) == {"sport", "business"}
    assert 0.0 <= scores["cats_macro_f"] <= 1.0
    predicted = [nlp(text).cats for text, _ in texts]
    assert all(abs(sum(c.values()) - 1.0) < 1e-5 for c in predicted)
