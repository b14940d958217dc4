"""Closed sets of alternatives are decided as whole values: the engine's probabilities and
choices equal a brute-force reference (one plain forward pass of prompt + value per
alternative), greedy and sampled, in both decode loops."""

from __future__ import annotations

import json
from typing import Any, List

import pytest
import torch

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.generation.sampling import make_generators, request_seed
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.types import GenerationRequest

from ..fixtures.helpers import structured_nlp
from ..fixtures.tiny import CORPUS

CHOICES = ["London", "Paris", "the United Kingdom", "Lon"]  # "Lon" may also go on: scored with EOS
PROMPTS = list(dict.fromkeys(CORPUS))
SCHEMA = {
    "type": "object",
    "properties": {"section": {"enum": ["Books", "Electronics", "Toys"]}},
    "required": ["section"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


def brute_force(model: Any, prefix: List[int], values: List[List[int]]) -> List[float]:
    """Summed log-probability of each value's tokens after ``prefix``, one pass each."""
    out = []
    with torch.no_grad():
        for value in values:
            ids = torch.tensor([prefix + value])
            lp = torch.log_softmax(model.model(input_ids=ids).logits[0].float(), dim=-1)
            out.append(sum(float(lp[len(prefix) - 1 + j, t]) for j, t in enumerate(value)))
    return out


def choice_tokens(model: Any, text: str) -> List[int]:
    ids = model.encode(text, add_special_tokens=False)
    # "Lon" is a prefix of "London": its score includes ending there (the stop token)
    return ids + ([model.stop_token_ids[0]] if text == "Lon" else [])


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_choices_equal_the_brute_force_reference(model, fast, temperature):
    cfg = GenerationConfig(choices=CHOICES, max_new_tokens=16, temperature=temperature, seed=5)
    out = Engine(model, cfg, batch_size=3, fast_decoder=fast).run(
        [GenerationRequest(p) for p in PROMPTS]
    )
    for prompt, res in zip(PROMPTS, out):
        [decision] = res.choices
        assert decision["alternatives"] == CHOICES and decision["start"] == 0
        prefix = model.encode(prompt)
        sums = brute_force(model, prefix, [choice_tokens(model, c) for c in CHOICES])
        probs = torch.softmax(torch.tensor(sums, dtype=torch.float64), dim=0)
        assert decision["probs"] == pytest.approx(probs.tolist(), abs=1e-4)
        if temperature == 0.0:
            expected = int(torch.argmax(probs))
        else:  # the document's own generator, first draw, from softmax(sums / T)
            gen = make_generators([request_seed(cfg.seed, prefix)])[0]
            warped = torch.softmax(torch.tensor(sums, dtype=torch.float64) / temperature, dim=0)
            expected = int(torch.multinomial(warped, 1, generator=gen)[0])
        assert res.text == decision["text"] == CHOICES[expected]
        assert res.finish_reason == "stop"


def test_an_enum_inside_json_is_decided_from_the_output_so_far(model):
    """Mid-object: the prefix is the prompt plus the tokens before the value."""
    cfg = GenerationConfig(json_schema=SCHEMA, max_new_tokens=40)
    for fast in (True, False):
        for prompt, res in zip(PROMPTS, Engine(model, cfg, fast_decoder=fast).run(
            [GenerationRequest(p) for p in PROMPTS]
        )):  # fmt: skip
            [decision] = res.choices
            value = json.loads(res.text)["section"]
            assert decision["text"] == json.dumps(value)
            start = decision["start"]
            assert res.text[start : start + len(decision["text"])] == decision["text"]
            # the tokens before the value: those decoding to the text before its start
            n = max(k for k in range(len(res.token_ids) + 1)
                    if len(model.decode(res.token_ids[:k])) <= start)  # fmt: skip
            before = model.decode(res.token_ids[:n])
            written = before[start:]  # part of the value a token before it already wrote
            rests = [
                model.encode(a[len(written) :], add_special_tokens=False)
                for a in decision["alternatives"]
            ]
            sums = brute_force(model, model.encode(prompt) + res.token_ids[:n], rests)
            probs = torch.softmax(torch.tensor(sums, dtype=torch.float64), dim=0)
            assert decision["probs"] == pytest.approx(probs.tolist(), abs=1e-4)
            assert decision["text"] == decision["alternatives"][int(torch.argmax(probs))]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_forced_tokens_in_one_pass_equal_step_by_step_decoding(model, monkeypatch, temperature):
    """llguidance's fast-forward tokens (keys, punctuation, closing brackets) are verified
    in one pass; the output is the step-by-step one, token for token, logprobs included."""
    from spacy_llama.generation import continuous

    schema = {
        "type": "object",
        "properties": {
            "section": {"enum": ["Books", "Electronics", "Toys"]},
            "keywords": {"type": "array", "items": {"type": "string", "maxLength": 6}},
            "rating": {"type": "integer"},
        },
        "required": ["section", "keywords", "rating"],
        "additionalProperties": False,
    }
    cfg = GenerationConfig(json_schema=schema, max_new_tokens=96, temperature=temperature)
    reqs = [GenerationRequest(p) for p in PROMPTS]
    fast = Engine(model, cfg, batch_size=3)
    a = fast.run(reqs)
    assert fast.last_forced_tokens > 0
    monkeypatch.setattr(continuous, "MAX_FORCED", 0)
    slow = Engine(model, cfg, batch_size=3, prompt_lookup=False)
    b = slow.run(reqs)
    assert slow.last_forced_tokens == 0
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.text == y.text
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4, nan_ok=True)
        assert [c["text"] for c in x.choices] == [c["text"] for c in y.choices]
        for c, d in zip(x.choices, y.choices):
            assert c["probs"] == pytest.approx(d["probs"], abs=1e-4)


def test_extract_writes_a_confidence_per_decided_enum_field(tiny_hf):
    from spacy_llama.tasks.structured import confidences
    from spacy_llama.types import GenerationResult

    task = {"@llama_tasks": "spacy-llama.Extract.v1", "schema": SCHEMA}
    nlp = structured_nlp(tiny_hf, task, max_new_tokens=40)
    for doc in nlp.pipe(PROMPTS[:3]):
        [(path, p)] = doc._.llama_data_confidence.items()
        assert path == "/section" and doc._.llama_data["section"] in [
            "Books",
            "Electronics",
            "Toys",
        ]
        assert 1 / 3 <= p <= 1.0  # greedy: the likeliest of three
    # nested fields by JSON pointer; the offsets are those of the written text
    text = '{"items": [{"label": "B", "n": 1}, {"label": "A", "n": 2}]}'
    res = GenerationResult(
        text=text,
        choices=[
            {"start": text.index('"A"'), "text": '"A"', "alternatives": ['"A"', '"B"'],
             "probs": [0.7, 0.3]},
        ],
    )  # fmt: skip
    assert confidences(json.loads(text), res) == {"/items/1/label": 0.7}
    assert confidences(json.loads(text), GenerationResult(text=text.replace(": ", ":"),
                       choices=res.choices)) == {}  # fmt: skip


def test_every_decision_of_a_step_is_scored_in_one_pass(model, monkeypatch):
    """The continuous batcher scores the closed sets of all rows deciding at one step
    together (alternatives.StepScorer), with the probabilities of one row at a time."""
    from spacy_llama.generation import decoder

    passes: List[int] = []
    verify = decoder.FastLlama.verify

    def counting(self, tokens, lengths, cache):
        passes.append(int(tokens.shape[0]))
        return verify(self, tokens, lengths, cache)

    cfg = GenerationConfig(choices=CHOICES, max_new_tokens=16)
    one = Engine(model, cfg, batch_size=1).run([GenerationRequest(p) for p in PROMPTS])
    monkeypatch.setattr(decoder.FastLlama, "verify", counting)
    together = Engine(model, cfg, batch_size=len(PROMPTS)).run(
        [GenerationRequest(p) for p in PROMPTS]
    )
    # every prompt decides at its first step: one pass holds every row's alternatives
    assert len(PROMPTS) * len(CHOICES) in passes
    for a, b in zip(one, together):
        assert a.text == b.text
        assert a.choices[0]["probs"] == pytest.approx(b.choices[0]["probs"], abs=1e-4)


def test_choices_sharing_a_forced_first_byte_are_decided_as_wholes(model):
    """TextCat.v2's candidates all start with a space: the grammar forces that byte, but no
    token for it alone, so the decision is taken there, not token by token."""
    spaced = [" London", " Paris", " the United Kingdom"]
    cfg = GenerationConfig(choices=spaced, max_new_tokens=16)
    for prompt, res in zip(
        PROMPTS, Engine(model, cfg).run([GenerationRequest(p) for p in PROMPTS])
    ):
        [decision] = res.choices
        sums = brute_force(
            model, model.encode(prompt), [model.encode(c, add_special_tokens=False) for c in spaced]
        )
        probs = torch.softmax(torch.tensor(sums, dtype=torch.float64), dim=0)
        assert decision["probs"] == pytest.approx(probs.tolist(), abs=1e-4)
        assert res.text == spaced[int(torch.argmax(probs))]
