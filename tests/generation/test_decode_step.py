"""A stop string cuts the text, and the tokens and log-probs of what was cut go with it."""

from __future__ import annotations

from typing import List

import torch

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.decode_step import SequenceState, Stepper

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
