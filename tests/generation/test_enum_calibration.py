"""Closed-set decisions calibrated on content-free probes (TextCat.v2's PMI for enum fields
and choices): the engine's probabilities and choices equal a brute-force reference, the
summed log-probability after the prompt less the mean log-probability after each probe."""

from __future__ import annotations

import json
import math
from typing import Any, List

import pytest
import spacy
import torch

from spacy_llama.errors import SchemaError
from spacy_llama.generation.alternatives import calibrated, priors_from
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.types import Constraint, GenerationRequest

from ..fixtures.helpers import structured_nlp
from ..fixtures.tiny import CORPUS
from .test_alternatives import CHOICES, brute_force, choice_tokens

PROMPTS = list(dict.fromkeys(CORPUS))
PROBES = ["N/A", "nothing here"]


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


def log_probs(sums: List[float]) -> torch.Tensor:
    return torch.log_softmax(torch.tensor(sums, dtype=torch.float64), dim=0)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_calibrated_choices_equal_the_brute_force_reference(model, fast, weight):
    spec = json.dumps(CHOICES)
    constraint = Constraint(
        "choices", spec, probes=tuple((p, spec) for p in PROBES), prior_weight=weight
    )
    cfg = GenerationConfig(max_new_tokens=16)
    reqs = [GenerationRequest(p, constraint=constraint) for p in PROMPTS]
    plain = Engine(model, cfg, fast_decoder=fast).run(
        [GenerationRequest(p, constraint=Constraint("choices", spec)) for p in PROMPTS]
    )
    out = Engine(model, cfg, batch_size=3, fast_decoder=fast).run(reqs)
    values = [choice_tokens(model, c) for c in CHOICES]
    prior = torch.stack(
        [log_probs(brute_force(model, model.encode(p), values)) for p in PROBES]
    ).mean(dim=0)
    changed = 0
    for prompt, res, before in zip(PROMPTS, out, plain):
        [decision] = res.choices
        sums = torch.tensor(brute_force(model, model.encode(prompt), values), dtype=torch.float64)
        probs = torch.softmax(sums - weight * prior, dim=0)
        assert decision["probs"] == pytest.approx(probs.tolist(), abs=1e-4)
        assert res.text == CHOICES[int(torch.argmax(probs))]
        changed += res.text != before.text
    assert changed  # the probes moved at least one decision


def test_priors_are_the_mean_log_probability_per_closed_set():
    a, b = ["x", "y"], ["p", "q", "r"]
    choices = [
        [{"alternatives": a, "probs": [0.5, 0.5]}, {"alternatives": b, "probs": [0.2, 0.3, 0.5]}],
        [{"alternatives": a, "probs": [0.9, 0.1]}],
    ]
    priors = priors_from(choices, 0.5)
    assert priors[("x", "y")]["x"] == pytest.approx(0.5 * (math_log(0.5) + math_log(0.9)) / 2)
    assert priors[("p", "q", "r")]["r"] == pytest.approx(0.5 * math_log(0.5))
    # a decision over part of a set (some members no longer open) uses the set's priors
    assert calibrated([1.0, 2.0], ["q", "r"], priors) == pytest.approx(
        [1.0 - 0.5 * math_log(0.3), 2.0 - 0.5 * math_log(0.5)]
    )
    assert calibrated([1.0, 2.0], ["u", "v"], priors) == [1.0, 2.0]  # no probe: unchanged


def math_log(x: float) -> float:
    return math.log(x)


def extract_nlp(tiny_hf: Any, **settings: Any) -> spacy.Language:
    schema = {
        "type": "object",
        "properties": {"section": {"enum": ["Books", "Electronics", "Toys"]}},
        "required": ["section"],
    }
    task = {"@llama_tasks": "spacy-llama.Extract.v2", "template": "Text: {{ text }}"}
    return structured_nlp(tiny_hf, {**task, "schema": schema, **settings})


def test_extract_calibrates_its_enum_fields_on_its_own_prompt(tiny_hf):
    nlp = extract_nlp(tiny_hf, calibrate=True, content_free=["N/A", ""], prior_weight=0.5)
    task = nlp.get_pipe("llama").task
    [req] = task.requests([nlp.make_doc(PROMPTS[0])])
    assert req.constraint is not None and req.constraint.prior_weight == 0.5
    assert [p for p, _ in req.constraint.probes] == ["Text: N/A", "Text: "]
    assert all(spec == req.constraint.spec for _, spec in req.constraint.probes)
    docs = list(nlp.pipe(PROMPTS))
    assert all(d._.llama_data["section"] in ("Books", "Electronics", "Toys") for d in docs)
    assert all(set(d._.llama_data_confidence) == {"/section"} for d in docs)
    plain = extract_nlp(tiny_hf).get_pipe("llama").task.requests([nlp.make_doc(PROMPTS[0])])
    assert plain[0].constraint is not None and not plain[0].constraint.probes  # off by default


@pytest.mark.parametrize(
    "settings, code",
    [
        ({"calibrate": True, "content_free": []}, "E654"),
        ({"prior_weight": 1.5}, "E655"),
    ],
)
def test_extract_rejects_a_bad_calibration(tiny_hf, settings, code):
    with pytest.raises(SchemaError, match=code):
        extract_nlp(tiny_hf, **settings)
