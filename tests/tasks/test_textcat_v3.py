"""spacy-llama.TextCat.v3: v2 subtracting a share (``prior_weight``) of the content-free
baseline, so a label the model favours everywhere stays reachable (issue 26: the shipped
config never predicted ``business`` on the gold test half)."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.util import load_config, load_model_from_config

from spacy_llama.errors import FewShotError
from spacy_llama.registry import llama_tasks
from spacy_llama.tasks.calibration import pmi
from spacy_llama.tasks.labels import softmax
from spacy_llama.tasks.textcat import textcat_task_v2, textcat_task_v3
from spacy_llama.types import ScoreResult

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["business", "sport"]


def result(sums):
    return ScoreResult(sums=list(sums), means=list(sums), n_tokens=[1] * len(sums))


def assign(task, doc_sums, probe_sums):
    nlp = spacy.blank("en")
    doc = nlp.make_doc("Shares rose.")
    task.prefix = " "
    task.assign([doc], [result(p) for p in probe_sums] + [result(doc_sums)])
    return doc.cats


def test_prior_weight_subtracts_a_share_of_the_content_free_mean():
    # business is favoured by every content-free prompt (prior -2 vs -8), and the doc
    # raises it by less than that: full PMI (v2) can never pick it, v3 at 0.6 does
    doc_sums, probes = [-1.0, -6.0], [[-2.0, -8.0]] * 3
    v2 = assign(textcat_task_v2(labels=LABELS), doc_sums, probes)
    v3 = assign(textcat_task_v3(labels=LABELS), doc_sums, probes)
    assert v2["sport"] > v2["business"]
    assert v3["business"] > v3["sport"]
    want = softmax([-1.0 - 0.6 * -2.0, -6.0 - 0.6 * -8.0])
    assert [v3[x] for x in LABELS] == pytest.approx(want)
    assert pmi([1.0], [2.0]) == [-1.0]  # weight 1: v2's PMI, unchanged
    one = assign(textcat_task_v3(labels=LABELS, prior_weight=1.0), doc_sums, probes)
    assert one == pytest.approx(v2)


def test_bad_prior_weight_is_a_coded_error():
    with pytest.raises(FewShotError, match=r"E831.*prior_weight = 1.5"):
        textcat_task_v3(labels=LABELS, prior_weight=1.5)


def test_shipped_textcat_config_uses_v3_defaults():
    cfg = load_config(ROOT / "configs" / "textcat.cfg", interpolate=False)
    task = cfg["components"]["llama"]["task"]
    assert task["@llama_tasks"] == "spacy-llama.TextCat.v3"
    assert llama_tasks.get("spacy-llama.TextCat.v3") is textcat_task_v3
    params = inspect.signature(textcat_task_v3).parameters
    for key in ("label_score", "calibrate", "chat", "content_free", "prior_weight"):
        assert task.get(key, params[key].default) == params[key].default, key


def test_shipped_config_predicts_every_label_on_the_gold_test_half(smollm2):
    """The failing case of issue 26: with v2's full PMI, business was 0/11 here."""
    cfg = load_config(ROOT / "configs" / "textcat.cfg", interpolate=False)
    cfg["components"]["llama"]["model"].update({"device": "cpu", "dtype": "float32"})
    cfg["nlp"]["pipeline"] = ["llama"]  # the task reads only the text
    for name in [n for n in cfg["components"] if n != "llama"]:
        del cfg["components"][name]
    nlp = load_model_from_config(cfg, auto_fill=True, validate=True)
    gold = list(DocBin().from_disk(ROOT / "corpus/splits/gold_test.spacy").get_docs(nlp.vocab))
    docs = nlp.pipe(nlp.make_doc(d.text) for d in gold)
    predicted = Counter(max(d.cats, key=d.cats.get) for d in docs)
    labels = cfg["components"]["llama"]["task"]["labels"]
    assert all(predicted[label] > 0 for label in labels), predicted
