"""generation/decode_step.py, the decode step shared by both loops: choose, record, stop. A stop
token ends a row without being recorded; max_new_tokens ends it at exactly that many; the
reported log-probabilities are the raw model's, whatever the sampling settings; a stop
string cuts the text, and the tokens and log-probs of what was cut go with it."""

from __future__ import annotations

import math
from typing import List

import pytest
import torch

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.decode_step import SequenceState, Stepper
from spacy_llama.generation.sampling import make_generators

from ..fixtures.helpers import TEXTS, tiny_nlp

PIECES = {0: "Paris", 1: " is", 2: "\n", 3: "Q", 4: ":", 5: ".\nQ"}


def decode(ids: List[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def run(tokens: List[int], stop: List[str]) -> SequenceState:
    stepper = Stepper(GenerationConfig(max_new_tokens=10, temperature=0.0, stop=stop), [99], decode)
    seq = SequenceState(index=0, prompt_len=1)
    for k, tok in enumerate(tokens):
        logits = torch.full((1, 8), -5.0)
        logits[0, tok] = 5.0 + k  # a different log-prob per step: we can tell them apart
        if stepper.step(logits, [seq])[0]:
            break
    return seq


def test_stop_token_text_cut_drops_its_logprob():
    seq = run([0, 1, 2, 3], stop=["\n"])
    res = seq.result(decode)
    assert res.text == "Paris is" and res.finish_reason == "stop"
    assert res.token_ids == [0, 1]  # "\n" was cut: its token and log-prob are gone
    assert len(res.logprobs) == 2


def test_multi_token_stop_string_drops_all_its_tokens():
    seq = run([0, 2, 3, 4], stop=["\nQ:"])
    assert seq.result(decode).text == "Paris"
    assert seq.tokens == [0] and len(seq.logprobs) == 1


def test_token_straddling_the_cut_is_kept():
    # ".\nQ" holds kept text (".") and the stop string: its value stays
    seq = run([0, 5], stop=["\nQ"])
    assert seq.result(decode).text == "Paris."
    assert seq.tokens == [0, 5] and len(seq.logprobs) == 2


def test_a_stop_token_ends_the_row_unrecorded():
    stepper = Stepper(GenerationConfig(max_new_tokens=10), [7], decode)
    seq = SequenceState(index=0, prompt_len=3)
    for tok in (0, 1, 7):
        logits = torch.full((1, 8), -5.0)
        logits[0, tok] = 5.0
        done = stepper.step(logits, [seq])[0]
    res = seq.result(decode)
    assert done and res.finish_reason == "eos" and res.token_ids == [0, 1]
    assert res.text == "Paris is" and len(res.logprobs) == 2 and res.prompt_tokens == 3
    assert stepper.generated == 2


def test_max_new_tokens_ends_the_row_at_exactly_that_many():
    stepper = Stepper(GenerationConfig(max_new_tokens=3), [7], decode)
    seq = SequenceState(index=0, prompt_len=1)
    done = []
    for _ in range(3):
        logits = torch.full((1, 8), -5.0)
        logits[0, 1] = 5.0
        done += stepper.step(logits, [seq])
    assert done == [False, False, True]
    assert seq.tokens == [1, 1, 1] and seq.reason == "length"


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (3.0, 1, 1.0), (0.5, 2, 0.5)])
def test_logprobs_are_the_raw_models_whatever_the_sampling(temperature, top_k, top_p):
    """Log-softmax of the raw logits at the chosen token, by hand: not the warped (top-k 1
    would make every choice certain), as Meta's reference generate reports them."""
    raw = [[1.0, 3.0, 0.0, -1.0, 2.5, 0.5, -2.0, 0.0], [0.0, 0.5, 4.0, 0.0, 0.0, 3.0, 0.0, 0.0]]
    config = GenerationConfig(max_new_tokens=5, temperature=temperature, top_k=top_k, top_p=top_p)
    stepper = Stepper(config, [99], decode)
    seqs = [SequenceState(index=i, prompt_len=1, generator=make_generators([i])[0]) for i in (0, 1)]
    stepper.step(torch.tensor(raw), seqs)
    for row, seq in zip(raw, seqs):
        [tok] = seq.tokens
        want = row[tok] - math.log(sum(math.exp(x) for x in row))
        assert seq.logprobs == pytest.approx([want], abs=1e-6)
        if top_k == 1 or temperature == 0.0:
            assert tok == max(range(8), key=lambda i: row[i])


def test_stop_strings(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 16})
    full = nlp(TEXTS[2])._.llama_completion
    stop = full[3:5]
    assert stop and stop in full
    nlp2 = tiny_nlp(tiny_hf, generation={"max_new_tokens": 16, "stop": [stop]})
    doc = nlp2(TEXTS[2])
    assert doc._.llama_completion == full[: full.index(stop)]
    assert len(doc._.llama_logprobs) < 16
