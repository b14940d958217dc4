"""generation/continuous.py: continuous batching (slots refilled as rows finish, live rows
compacted, the shared prompt prefix computed once, prefill passes under a token budget)
gives each document exactly what decoding it on its own gives: transformers' own greedy
generate, token for token, log-probability for log-probability."""

from __future__ import annotations

from typing import List

import pytest

from spacy_llama.generation import continuous

from ..fixtures.helpers import TEXTS, tiny_nlp
from ..fixtures.reference import hf_greedy

TEMPLATE = "Summarize the text in one short sentence. Text: {{ text }}"


@pytest.mark.parametrize(
    "case,batch_size,template,prefill_tokens",
    [
        ("slots refilled and compacted", 3, "{{ text }}", None),
        ("shared prefix computed once", 3, TEMPLATE, None),
        ("prefill split by a token budget", 8, TEMPLATE, 20),
    ],
)
def test_each_row_equals_transformers_generate_alone(
    tiny_hf, monkeypatch, case, batch_size, template, prefill_tokens
):
    if prefill_tokens is not None:
        monkeypatch.setattr(continuous, "PREFILL_TOKENS", prefill_tokens)
    nlp = tiny_nlp(tiny_hf, template=template, generation={"max_new_tokens": 10},
                   batch_size=batch_size)  # fmt: skip
    pipe = nlp.get_pipe("llama")
    docs = list(nlp.pipe(TEXTS, batch_size=100))
    assert pipe.engine.fast is not None  # the fused decoder ran, not the transformers loop
    sizes = pipe.engine.last_prefill_sizes
    assert sum(sizes) == len(TEXTS) and max(sizes) <= batch_size
    if prefill_tokens is not None:
        assert len(sizes) > 1  # the budget split the one prefill of 8 rows
    model = pipe.model
    for doc in docs:
        [req] = pipe.task.requests([nlp.make_doc(doc.text)])
        ids = model.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        want_ids, want_logprobs = hf_greedy(model.model, ids, 10, model.stop_token_ids)
        assert doc._.llama_completion == model.decode(want_ids), case
        assert doc._.llama_logprobs == pytest.approx(want_logprobs, abs=1e-4), case


def test_batch_equals_single(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=8)
    batched = [(d._.llama_completion, d._.llama_logprobs) for d in nlp.pipe(TEXTS, batch_size=8)]
    single = [(nlp(t)._.llama_completion, nlp(t)._.llama_logprobs) for t in TEXTS]
    for (bt, bl), (st, sl) in zip(batched, single):
        assert bt == st
        assert bl == pytest.approx(sl, abs=1e-4)


def test_engine_batches_sorted_by_length(tiny_hf, monkeypatch):
    """At most batch_size sequences decode together, prompts are taken longest first, and
    freed slots are refilled while the others keep decoding."""
    nlp = tiny_nlp(tiny_hf, batch_size=4)
    engine = nlp.get_pipe("llama").engine
    fast = engine.fast
    assert fast is not None
    seen = []
    original = fast.prefill

    def spy(ids, lengths, cache, slots, *, start):
        seen.append((lengths.tolist(), slots.tolist()))
        return original(ids, lengths, cache, slots, start=start)

    # monkeypatch: the fused decoder is shared by every pipeline on this model
    monkeypatch.setattr(fast, "prefill", spy)
    list(nlp.pipe(TEXTS, batch_size=100))
    assert sum(len(lengths) for lengths, _ in seen) == len(TEXTS)
    assert all(max(slots) < 4 for _, slots in seen)
    flat = [n for lengths, _ in seen for n in lengths]
    assert flat == sorted(flat, reverse=True)
    assert seen[0][1] == [0, 1, 2, 3] and len(seen) > 1  # later prompts reuse freed slots


def test_shared_prefix_is_computed_once(tiny_hf, monkeypatch):
    template = "Summarize the text in one short sentence. Text: {{ text }}"
    with_prefix = tiny_nlp(tiny_hf, template=template, generation={"max_new_tokens": 10})
    without = tiny_nlp(
        tiny_hf, template=template, generation={"max_new_tokens": 10}, prefix_cache=False
    )
    assert without.get_pipe("llama").engine.prefix_cache is False
    engine = with_prefix.get_pipe("llama").engine
    calls = []
    original = engine.fast.prefix

    def spy(ids, cache, slot):
        calls.append(list(ids))
        return original(ids, cache, slot)

    monkeypatch.setattr(engine.fast, "prefix", spy)  # shared with `without`, which never calls it
    a = [d._.llama_completion for d in with_prefix.pipe(TEXTS)]
    b = [d._.llama_completion for d in without.pipe(TEXTS)]
    assert len(calls) == 1 and len(calls[0]) >= 8  # "<s>Summarize the text ..." once
    assert a == b


def test_prefill_token_budget_splits_passes_without_changing_results(tiny_hf, monkeypatch):
    whole = [d._.llama_completion for d in tiny_nlp(tiny_hf, batch_size=8).pipe(TEXTS)]
    for budget in (20, 60):
        monkeypatch.setattr(continuous, "PREFILL_TOKENS", budget)
        nlp = tiny_nlp(tiny_hf, batch_size=8)
        split = [d._.llama_completion for d in nlp.pipe(TEXTS)]
        sizes = nlp.get_pipe("llama").engine.last_prefill_sizes
        assert split == whole
        assert len(sizes) > 1 and sum(sizes) == len(TEXTS)
        # by hand: prompts longest first, a pass takes rows while rows x longest <= budget
        pipe = nlp.get_pipe("llama")
        requests = pipe.task.requests([nlp.make_doc(text) for text in TEXTS])
        lengths = sorted((len(pipe.model.encode(r.prompt)) for r in requests), reverse=True)
        want: List[int] = []
        longest = 0
        for n in lengths:
            if want and max(longest, n) * (want[-1] + 1) <= budget:
                want[-1] += 1
            else:
                want.append(1)
                longest = n
        assert sizes == want, (budget, lengths)
    assert max(want) > 2  # the larger budget put several rows in one pass
