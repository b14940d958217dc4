"""generation/sampling.py: temperature, top-k and top-p (Meta's rule) against a hand
computation; a seeded draw follows the warped distribution and each row only its own
generator; the per-document seed depends on the config seed and the prompt alone."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import List

import pytest
import torch

from spacy_llama.generation.sampling import (
    choose_tokens,
    filter_logits,
    make_generators,
    request_seed,
)

from ..fixtures.helpers import TEXTS, tiny_nlp

RAW = [2.0, 1.0, 0.5, -1.0, 0.0, 1.5]


def softmax(xs: List[float]) -> List[float]:
    top = max(x for x in xs if x != -math.inf)
    es = [math.exp(x - top) if x != -math.inf else 0.0 for x in xs]
    return [e / sum(es) for e in es]


def by_hand(raw: List[float], temperature: float, top_k: int, top_p: float) -> List[float]:
    """The sampling distribution, computed in plain Python: divide by the temperature; keep
    the top_k largest; then, in descending order, drop a token once the mass before it
    exceeds top_p."""
    xs = [x / temperature for x in raw]
    if 0 < top_k < len(xs):
        kth = sorted(xs, reverse=True)[top_k - 1]
        xs = [x if x >= kth else -math.inf for x in xs]
    probs = softmax(xs)
    order = sorted(range(len(xs)), key=lambda i: -xs[i])
    before = 0.0
    for i in order:
        if before > top_p:
            xs[i] = -math.inf
        before += probs[i]
    return softmax(xs)


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (0.7, 0, 0.6),
                                (2.0, 4, 0.8), (1.0, 0, 0.3)]
)  # fmt: skip
def test_filter_logits_is_the_hand_computed_distribution(temperature, top_k, top_p) -> None:
    warped = filter_logits(torch.tensor([RAW]), temperature=temperature, top_k=top_k, top_p=top_p)
    got = torch.softmax(warped, dim=-1)[0].tolist()
    assert got == pytest.approx(by_hand(RAW, temperature, top_k, top_p), abs=1e-6)


def test_top_p_keeps_the_token_that_crosses_the_threshold() -> None:
    # probabilities 0.5, 0.3, 0.2: with top_p 0.6 the mass before the second is 0.5 (kept),
    # before the third 0.8 (dropped)
    raw = [math.log(0.5), math.log(0.3), math.log(0.2)]
    warped = filter_logits(torch.tensor([raw]), temperature=1.0, top_k=0, top_p=0.6)
    assert torch.isinf(warped[0]).tolist() == [False, False, True]
    assert torch.softmax(warped, -1)[0].tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0.0])


def test_greedy_is_the_argmax_and_needs_no_generator() -> None:
    logits = torch.tensor([RAW, list(reversed(RAW))])
    chosen = choose_tokens(logits, temperature=0.0, top_k=0, top_p=1.0, generators=[])
    assert chosen.tolist() == [0, len(RAW) - 1]


def test_seeded_draws_follow_the_hand_computed_distribution() -> None:
    """4000 draws of one seeded row: the frequencies are the hand-computed probabilities
    (the seed makes this exact run the same every time)."""
    want = by_hand(RAW, 0.8, 4, 0.9)
    [gen] = make_generators([1234])
    logits = torch.tensor([RAW])
    counts = Counter(
        int(choose_tokens(logits, temperature=0.8, top_k=4, top_p=0.9, generators=[gen])[0])
        for _ in range(4000)
    )
    freqs = [counts[i] / 4000 for i in range(len(RAW))]
    assert freqs == pytest.approx(want, abs=0.025)
    assert all(counts[i] == 0 for i, p in enumerate(want) if p == 0.0)  # filtered: never drawn


def test_a_row_draws_from_its_own_generator_only() -> None:
    """Row i's draws are those of generators[i] whatever the other rows are: a document's
    sample does not depend on its batch."""
    logits = torch.tensor([RAW, RAW[::-1], [0.0] * len(RAW)])
    kw = dict(temperature=1.0, top_k=0, top_p=1.0)
    together = choose_tokens(logits, generators=make_generators([1, 2, 3]), **kw).tolist()
    alone = [
        int(choose_tokens(logits[i : i + 1], generators=make_generators([seed]), **kw)[0])
        for i, seed in enumerate([1, 2, 3])
    ]
    assert together == alone
    # and the same seed draws the same sequence again
    gens_a, gens_b = make_generators([9]), make_generators([9])
    a = [int(choose_tokens(logits[:1], generators=gens_a, **kw)[0]) for _ in range(50)]
    b = [int(choose_tokens(logits[:1], generators=gens_b, **kw)[0]) for _ in range(50)]
    assert a == b and len(set(a)) > 1


def test_request_seed_is_a_function_of_the_config_seed_and_the_prompt() -> None:
    """sha256 of the seed and the prompt's ids: the same in any process and any batch (not
    Python's salted hash), different for another seed or another prompt."""
    digest = hashlib.sha256(b"7\x001,5,9").digest()
    assert request_seed(7, [1, 5, 9]) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert request_seed(7, [1, 5, 9]) == request_seed(7, (1, 5, 9))
    assert len({request_seed(7, [1, 5, 9]), request_seed(8, [1, 5, 9]),
                request_seed(7, [1, 5]), request_seed(7, [1, 59])}) == 4  # fmt: skip
    assert 0 <= request_seed(2**40, list(range(300))) < 2**63


def test_sampling_is_reproducible_and_batch_independent(tiny_hf):
    gen = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 7, "max_new_tokens": 10}
    nlp = tiny_nlp(tiny_hf, generation=gen, batch_size=4)
    a = [d._.llama_completion for d in nlp.pipe(TEXTS)]
    b = [nlp(t)._.llama_completion for t in TEXTS]
    assert a == b
    other = tiny_nlp(tiny_hf, generation={**gen, "seed": 8})
    c = [d._.llama_completion for d in other.pipe(TEXTS)]
    assert c != a  # a different seed draws differently
