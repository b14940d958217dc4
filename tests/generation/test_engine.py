"""generation/engine.py: the engine dispatches a task's mixed requests and returns results
in request order; greedy decoding is transformers' generate; its two decode paths (the fused
decoder, the portable transformers loop) agree; empty prompts make no model call; a prompt
that cannot fit is a coded error naming the document."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_llama.errors import PromptTooLongError
from spacy_llama.types import (
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    TokenLogprobRequest,
    TokenLogprobResult,
)

from ..fixtures.helpers import TEXTS, tiny_nlp
from ..fixtures.reference import hf_greedy


def test_greedy_equals_transformers_generate(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10, "stop_token_ids": []})
    pipe = nlp.get_pipe("llama")
    doc = nlp(TEXTS[0])
    # transformers' own model and tokenizer, read from the folder again
    tok = AutoTokenizer.from_pretrained(str(tiny_hf))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_hf), torch_dtype=torch.float32)
    prompt = tok(TEXTS[0])["input_ids"]
    ids, logprobs = hf_greedy(model, prompt, 10, pipe.model.stop_token_ids)
    assert doc._.llama_completion == tok.decode(ids, skip_special_tokens=True)
    assert doc._.llama_logprobs == pytest.approx(logprobs, abs=1e-4)
    assert len(doc._.llama_logprobs) == 10


def test_fast_decoder_equals_transformers_loop(tiny_hf):
    fast = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=3)
    slow = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=3)
    slow.get_pipe("llama").engine.use_fast_decoder = False
    a = [(d._.llama_completion, d._.llama_logprobs) for d in fast.pipe(TEXTS)]
    b = [(d._.llama_completion, d._.llama_logprobs) for d in slow.pipe(TEXTS)]
    assert fast.get_pipe("llama").engine.fast is not None
    assert slow.get_pipe("llama").engine.fast is None
    for (ta, la), (tb, lb) in zip(a, b):
        assert ta == tb
        assert la == pytest.approx(lb, abs=1e-4)


def test_empty_and_whitespace_docs_make_no_model_call(tiny_hf):
    nlp = tiny_nlp(tiny_hf)
    engine = nlp.get_pipe("llama").engine
    calls = engine.stats.model_calls
    docs = list(nlp.pipe(["", "   \n "]))
    assert [d._.llama_completion for d in docs] == ["", ""]
    assert [d._.llama_logprobs for d in docs] == [[], []]
    assert engine.stats.model_calls == calls


def test_mixed_requests_are_dispatched_and_returned_in_request_order(tiny_hf):
    """Oracle: each kind of request run on its own (generation, candidate scores, token
    log-probabilities); the mixed call interleaves them back by position."""
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 5})
    engine = nlp.get_pipe("llama").engine
    gen = [GenerationRequest(prompt=TEXTS[0]), GenerationRequest(prompt=TEXTS[4])]
    score = [ScoreRequest(prompt="London is a big", candidates=[" city", " dog"])]
    read = [TokenLogprobRequest(text=TEXTS[1])]
    mixed = [gen[0], score[0], read[0], gen[1]]
    calls = engine.stats.model_calls
    got = engine.run_all(mixed)
    assert engine.stats.model_calls == calls + 4
    assert [type(r) for r in got] == [
        GenerationResult, ScoreResult, TokenLogprobResult, GenerationResult
    ]
    alone_gen = engine.run(gen)
    assert [(r.text, r.token_ids) for r in (got[0], got[3])] == [
        (r.text, r.token_ids) for r in alone_gen
    ]
    assert got[0].logprobs == pytest.approx(alone_gen[0].logprobs, abs=1e-4)
    [alone_score] = engine.scorer.score(score)
    assert got[1].sums == pytest.approx(alone_score.sums, abs=1e-4)
    [alone_read] = engine.scorer.token_logprobs(read)
    assert got[2].token_ids == alone_read.token_ids
    assert got[2].logprobs[1:] == pytest.approx(alone_read.logprobs[1:], abs=1e-4)


def test_an_unknown_request_kind_is_a_coded_error(tiny_hf):
    @dataclass
    class Other:
        prompt: str

    engine = tiny_nlp(tiny_hf).get_pipe("llama").engine
    with pytest.raises(Exception, match=r"\[E051\].*Other"):
        engine.run_all([GenerationRequest(prompt="x"), Other("y")])  # type: ignore[list-item]


def test_a_prompt_longer_than_the_context_is_a_coded_error_naming_it(tiny_hf):
    # tiny model: context 256, max_new_tokens 8 -> at most 248 prompt tokens
    engine = tiny_nlp(tiny_hf).get_pipe("llama").engine
    long = " ".join(["London is a big city."] * 120)
    assert engine.model.count_tokens(long) > 248
    calls = engine.stats.model_calls
    with pytest.raises(PromptTooLongError, match=r"\[E403\].*doc-17"):
        engine.run([GenerationRequest(prompt="fine"), GenerationRequest(long, label="doc-17")])
    assert engine.stats.model_calls == calls  # refused before any decoding
