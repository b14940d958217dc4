"""The Scorer against direct, unbatched forward passes of the tiny random model."""

from __future__ import annotations

from typing import List, Optional

import pytest
import torch

from spacy_llama.errors import PromptTooLongError
from spacy_llama.generation.scoring import Scorer
from spacy_llama.models.base import LoadedModel
from spacy_llama.models.hf import hf_model_v1
from spacy_llama.types import ScoreRequest, TokenLogprobRequest


@pytest.fixture(scope="module")
def tiny(tiny_hf) -> LoadedModel:
    return hf_model_v1(path=str(tiny_hf), device="cpu")


@pytest.fixture(scope="module")
def fused(tiny):
    from spacy_llama.generation.decoder import FastLlama

    return FastLlama(tiny.model)


def make_scorer(tiny, fused, decoder: str, batch_size: int) -> Scorer:
    """The Scorer on transformers' forward pass, or on the engine's fused decoder."""
    return Scorer(tiny, batch_size=batch_size, fast=fused if decoder == "fused" else None)


DECODERS = pytest.mark.parametrize("decoder", ["transformers", "fused"])


def direct_logprobs(model: LoadedModel, ids: List[int]) -> List[Optional[float]]:
    """log P(token j | tokens < j) from one plain forward pass over the full row."""
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]


def direct_candidate(model: LoadedModel, prompt: str, cand: str) -> List[float]:
    enc = model.tokenizer(prompt + cand, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mine = [j for j, (_, e) in enumerate(enc["offset_mapping"]) if e > len(prompt)]
    lps = direct_logprobs(model, ids[: mine[-1] + 1])
    return [float(lps[j]) for j in mine]  # type: ignore[arg-type]


REQUESTS = [
    ScoreRequest(prompt="London is a big city in the", candidates=[" United Kingdom", " dog"]),
    ScoreRequest(prompt="Apple is looking at", candidates=[" buying", " a startup for $1", " x"]),
    ScoreRequest(
        prompt="The quick brown fox jumps over the lazy dog. Marie Curie won",
        candidates=[" the Nobel Prize", " Physics"],
    ),
]


@DECODERS
@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_score_matches_direct_forward_pass(tiny, fused, decoder, batch_size):
    results = make_scorer(tiny, fused, decoder, batch_size).score(REQUESTS)
    assert len(results) == len(REQUESTS)
    for req, res in zip(REQUESTS, results):
        for k, cand in enumerate(req.candidates):
            expected = direct_candidate(tiny, req.prompt, cand)
            assert res.n_tokens[k] == len(expected) > 0
            assert res.sums[k] == pytest.approx(sum(expected), abs=1e-3)
            assert res.means[k] == pytest.approx(sum(expected) / len(expected), abs=1e-3)


@DECODERS
def test_requests_sharing_a_prefix_are_grouped(tiny, fused, decoder):
    from spacy_llama.generation.rows import prefix_runs

    shared = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911. "
    other = "San Francisco considers banning sidewalk delivery robots. London is a big city. "
    prompts = [shared + "Entity: Marie", other + "Entity: London", shared + "Entity: Nobel Prize"]
    prompts += [shared + "Entity: 1903", other + "Entity: San Francisco"]
    reqs = [
        ScoreRequest(prompt=p + "\nType:", candidates=[" PERSON", " GPE", " DATE"]) for p in prompts
    ]
    scorer = make_scorer(tiny, fused, decoder, 4)  # several chunks per group
    prefixes = sorted(scorer.prepare(i, r).prefix for i, r in enumerate(reqs))
    assert sorted(len(g) for g in prefix_runs(prefixes)) == [2, 3]
    for req, res in zip(reqs, scorer.score(reqs)):
        for k, cand in enumerate(req.candidates):
            expected = direct_candidate(tiny, req.prompt, cand)
            assert res.sums[k] == pytest.approx(sum(expected), abs=1e-3)


@DECODERS
def test_candidate_merging_with_prompt_is_found_by_offsets(tiny, fused, decoder):
    # "Apple is look" + "ing": the boundary falls inside a word, so the tokenizations of the
    # prompt and of prompt+candidate do not concatenate; offsets still find the right tokens.
    req = ScoreRequest(prompt="Apple is look", candidates=["ing at", "s"])
    res = make_scorer(tiny, fused, decoder, 4).score([req])[0]
    for k, cand in enumerate(req.candidates):
        assert res.sums[k] == pytest.approx(sum(direct_candidate(tiny, req.prompt, cand)), abs=1e-3)


def test_score_errors(tiny):
    scorer = Scorer(tiny, batch_size=4)
    assert scorer.score([ScoreRequest(prompt="x", candidates=[])])[0].sums == []
    with pytest.raises(ValueError, match="empty candidate"):
        scorer.score([ScoreRequest(prompt="x", candidates=["a", ""], label="doc 'x'")])
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 60
    with pytest.raises(PromptTooLongError, match="doc 7"):
        scorer.score([ScoreRequest(prompt=long_prompt, candidates=[" a"], label="doc 7")])
    with pytest.raises(ValueError, match="nothing to condition on"):
        scorer.score([ScoreRequest(prompt="", candidates=["a"], add_special_tokens=False)])


@DECODERS
def test_token_logprobs_match_direct_forward_pass(tiny, fused, decoder):
    texts = ["London is a big city in the United Kingdom.", "Apple", "", "The quick brown fox"]
    scorer = make_scorer(tiny, fused, decoder, 2)  # rows of different lengths share a pass
    results = scorer.token_logprobs([TokenLogprobRequest(t) for t in texts])
    for text, res in zip(texts, results):
        enc = tiny.tokenizer(text, return_offsets_mapping=True)
        assert res.token_ids == list(enc["input_ids"])
        assert res.offsets == [tuple(o) for o in enc["offset_mapping"]]
        expected = direct_logprobs(tiny, res.token_ids)
        assert res.logprobs[0] is None
        for got, exp in zip(res.logprobs[1:], expected[1:]):
            assert got == pytest.approx(exp, abs=1e-3)


@DECODERS
def test_long_text_uses_overlapping_windows(tiny, fused, decoder):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    n = len(tiny.encode(text))
    assert n > tiny.context_length  # does not fit in one pass
    scorer = make_scorer(tiny, fused, decoder, 4)
    res = scorer.token_logprobs([TokenLogprobRequest(text)])[0]
    assert len(res.logprobs) == n
    assert res.logprobs[0] is None and all(x is not None for x in res.logprobs[1:])
    windows = scorer._windows(0, n)
    assert len(windows) > 1 and windows[-1].end == n
    # Every token is scored exactly once, with at least window - stride tokens of context.
    scored = [j for w in windows for j in range(w.score_from, w.end)]
    assert scored == list(range(1, n))
    for w in windows[1:]:
        assert w.score_from - w.begin >= scorer.window - scorer.stride
    # A token in the second window gets the value of a forward pass over that window.
    w = windows[1]
    ids = res.token_ids[w.begin : w.end]
    expected = direct_logprobs(tiny, ids)
    j = w.score_from + 3
    assert res.logprobs[j] == pytest.approx(expected[j - w.begin], abs=1e-3)


def test_engine_scores_on_its_fused_decoder(tiny):
    from spacy_llama.generation.config import GenerationConfig
    from spacy_llama.generation.engine import Engine

    engine = Engine(tiny, GenerationConfig(max_new_tokens=1), batch_size=4)
    assert engine.fast is not None and engine.scorer.fast is engine.fast
