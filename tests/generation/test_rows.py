"""generation/rows.py: padding, positions, shared prefixes and budgets, and the transformers
pass after a cached prefix, against unpadded single-row forward passes of the tiny model."""

from __future__ import annotations

import random
from typing import List

import pytest
import torch

from spacy_llama.generation.rows import (
    Past,
    common_prefix,
    forward_after,
    group_by_padded_size,
    group_by_sum,
    left_positions,
    pad_left,
    pad_right,
    prefix_runs,
    right_positions,
    shared_prefix,
)
from spacy_llama.models.base import LoadedModel
from spacy_llama.models.hf import hf_model_v1

ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tiny_hf) -> LoadedModel:
    return hf_model_v1(path=str(tiny_hf), device="cpu", dtype="float32")


def single_logits(lm: LoadedModel, ids: List[int]) -> torch.Tensor:
    """The oracle: one unpadded forward pass over one row, no cache, no mask."""
    with torch.inference_mode():
        return lm.model(input_ids=torch.tensor([ids])).logits[0].float()


# -- padding and positions ------------------------------------------------------------------
def test_pad_right_and_left_place_every_token_and_mask_it():
    rows = [[5, 6, 7], [8], []]
    ids, mask = pad_right(rows, pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    ids, mask = pad_right(rows, pad_id=0, width=5)
    assert ids.shape == (3, 5) and mask.sum(1).tolist() == [3, 1, 0]
    ids, mask = pad_left(rows, pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_positions_count_each_rows_own_tokens():
    _, mask = pad_left([[5, 6, 7], [8]])
    assert left_positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    assert right_positions(torch.tensor([0, 4]), 3).tolist() == [[0, 1, 2], [4, 5, 6]]


# -- shared prefixes ------------------------------------------------------------------------
def test_common_and_shared_prefix():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3]]) == 3
    assert common_prefix([[1, 2], [3, 2]]) == 0
    assert common_prefix([[4, 5]]) == 2 and common_prefix([]) == 0
    # every row keeps a token of its own: [1, 2, 3] shares at most 2
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3]]) == 2
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 4]]) == 3
    assert shared_prefix([[1, 2, 3, 4]]) == 0  # nothing to share with
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9]], min_shared=4) == 0
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9]], min_shared=3) == 3
    assert shared_prefix([[], [1]]) == 0


def test_prefix_runs_keep_a_long_shared_prefix_together():
    doc_a, doc_b = list(range(100, 140)), list(range(200, 240))
    common = list(range(20))  # an instruction every prefix starts with
    prefixes = sorted(
        [common + doc_a + [1], common + doc_a + [2], common + doc_a + [3], common + doc_b + [1]]
    )
    runs = prefix_runs(prefixes)
    assert [[prefixes[k][20] for k in run] for run in runs] == [[100, 100, 100], [200]]
    assert prefix_runs([[1] * 5, [1] * 5]) == [[0], [1]]  # shorter than min_shared
    assert prefix_runs([[1] * 5, [1] * 5], min_shared=5) == [[0, 1]]


# -- budgets --------------------------------------------------------------------------------
def test_group_by_sum_and_by_padded_size():
    assert group_by_sum([2, 3, 1, 5, 1], 5) == [[0, 1], [2], [3], [4]]
    assert group_by_sum([7, 1], 5) == [[0], [1]]  # an oversized item stands alone
    assert group_by_sum([1, 2], None) == [[0, 1]] and group_by_sum([], None) == []
    assert group_by_padded_size([5, 5, 30, 2], 20) == [[0, 1], [2], [3]]
    assert group_by_padded_size([4, 4, 4, 4, 4], 12) == [[0, 1, 2], [3, 4]]
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(1, 12) for _ in range(rng.randint(0, 15))]
        limit = rng.randint(1, 40)
        by_sum = group_by_sum(sizes, limit)
        by_pad = group_by_padded_size(sizes, limit)
        for groups, cost in ((by_sum, "sum"), (by_pad, "padded")):
            assert [i for g in groups for i in g] == list(range(len(sizes)))
            spent = [_cost(sizes, g, cost) for g in groups]
            assert all(len(g) == 1 or c <= limit for g, c in zip(groups, spent))
            # greedy: a group closes only when the next item would break the budget
            assert all(_cost(sizes, a + b[:1], cost) > limit for a, b in zip(groups, groups[1:]))


def _cost(sizes: List[int], group: List[int], kind: str) -> int:
    if kind == "sum":
        return sum(sizes[i] for i in group)
    return len(group) * max(sizes[i] for i in group)


# -- the transformers pass after a cached prefix --------------------------------------------
def test_padded_rows_after_a_shared_past_equal_unpadded_single_rows(tiny):
    lm = tiny.model
    body = lm.get_decoder()
    prefix = [1, 40, 41, 42, 43]
    rests = [[50, 51, 52], [60], [70, 71, 72, 73, 74]]
    conts = [[80, 81], [82], [83, 84, 85], [86]]
    owner = [0, 0, 1, 2]
    with torch.inference_mode():
        out, base = forward_after(body, [prefix], None, device=tiny.device, pad_id=7)
        assert base is not None and base.lengths.tolist() == [len(prefix)]
        out, past = forward_after(body, rests, base.select([0, 0, 0]), device=tiny.device, pad_id=7)
        assert past is not None
        assert past.lengths.tolist() == [len(prefix) + len(r) for r in rests]
        assert past.mask.shape == (3, len(prefix) + 5)
        head = lm.get_output_embeddings()
        for j, rest in enumerate(rests):
            expected = single_logits(tiny, prefix + rest)[len(prefix) :]
            got = head(out.last_hidden_state[j, : len(rest)]).float()
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        # the candidates continue their own row's cache, through the full LM's logits
        logits, after = forward_after(lm, conts, past.select(owner), device=tiny.device)
        assert after is not None and after.lengths.tolist() == [
            len(prefix) + len(rests[o]) + len(c) for o, c in zip(owner, conts)
        ]
    for k, (o, cont) in enumerate(zip(owner, conts)):
        row = prefix + rests[o] + cont
        expected = single_logits(tiny, row)[len(row) - len(cont) :]
        got = logits.logits[k, : len(cont)].float()
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_forward_after_without_a_past_keeps_the_graph_and_passes_options(tiny):
    lm = tiny.model
    rows = [[1, 30, 31, 32, 33, 34], [1, 35]]
    out, past = forward_after(
        lm.get_decoder(), rows, None, device=tiny.device, keep=False, width=8,
        output_hidden_states=True,
    )  # fmt: skip
    assert past is None
    assert out.last_hidden_state.shape[:2] == (2, 8)
    assert len(out.hidden_states) == lm.config.num_hidden_layers + 1
    assert out.last_hidden_state.requires_grad  # the caller's grad mode: the graph is kept
    head = lm.get_output_embeddings()
    for j, row in enumerate(rows):
        got = head(out.last_hidden_state[j, : len(row)]).float().detach()
        torch.testing.assert_close(got, single_logits(tiny, row), atol=ATOL, rtol=0)


def test_left_padded_rows_end_where_unpadded_rows_end(tiny):
    rows = [[1, 30, 31, 32, 33, 34], [1, 35], [1, 36, 37]]
    ids, mask = pad_left(rows, pad_id=0)
    with torch.inference_mode():
        logits = tiny.model(
            input_ids=ids, attention_mask=mask, position_ids=left_positions(mask)
        ).logits
    for j, row in enumerate(rows):
        expected = single_logits(tiny, row)[-1]
        torch.testing.assert_close(logits[j, -1].float(), expected, atol=ATOL, rtol=0)


def test_past_select_repeats_and_reorders_rows():
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    past = Past(((k, k + 100),), torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([2, 3]))
    picked = past.select([1, 0, 1])
    assert picked.lengths.tolist() == [3, 2, 3]
    assert picked.mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    keys, values = picked.layers[0]
    assert torch.equal(keys[0], k[1]) and torch.equal(values[1], k[0] + 100)
