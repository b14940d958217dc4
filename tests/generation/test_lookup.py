"""Prompt-lookup drafting: the drafts, the verify pass, and unchanged greedy outputs."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaForCausalLM

from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.continuous import ContinuousBatcher
from spacy_llama.generation.decoder import FastLlama
from spacy_llama.generation.lookup import DraftStats, PromptLookup

from ..fixtures.helpers import tiny_nlp
from ..fixtures.tiny import tiny_config

# Repetitive texts: a tiny random model's greedy output soon loops, and loops copy.
TEXTS = [
    "one two three four one two three four one two three four",
    "red green blue red green blue red green",
    "The cat sat. The cat sat. The cat",
    "a b c d e f g a b c d e f g a b c",
]


def test_draft_follows_the_latest_longest_match():
    lookup = PromptLookup(max_draft=3)
    lookup.start(7, [5, 1, 2, 9, 1, 2, 3, 4, 1, 2])
    # the sequence ends with (1, 2): its latest earlier occurrence is followed by 3, 4, 1
    assert lookup.draft(7, [], limit=3) == [3, 4, 1]
    # generated tokens count as context too: now it ends with (2, 3), followed by 4, 1, 2
    assert lookup.draft(7, [3], limit=3) == [4, 1, 2]
    assert lookup.draft(7, [3], limit=1) == [4]
    # an n-gram seen nowhere before drafts nothing
    assert lookup.draft(7, [3, 8], limit=3) == []
    lookup.finish(7)
    lookup.start(8, [4, 4])
    assert lookup.draft(8, [], limit=5) == [4]


def test_allot_picks_the_width_with_the_most_tokens_per_unit_of_time():
    def lookup(kept: int, checked: int) -> PromptLookup:
        stats = DraftStats(checked=checked, kept=kept)
        return PromptLookup(max_draft=6, step_tokens=16, stats=stats)

    long = list(range(9))
    # drafts that are usually right: one sequence drafts all it may
    assert lookup(95, 100).allot([long]) == [long[:6]]
    # usually wrong: a plain decode step
    assert lookup(5, 100).allot([long]) == [[]]
    # an even rate (the prior before any evidence): a short draft for one sequence ...
    assert 0 < len(lookup(0, 0).allot([long])[0]) < 6
    # ... none for a full batch, where a step is bound by arithmetic, not by the weights
    assert lookup(0, 0).allot([long] * 32) == [[]] * 32
    # one draft among four sequences would pad all four: not worth it
    assert lookup(0, 0).allot([long, [], [], []]) == [[], [], [], []]
    # every sequence is cut to the same width
    cut = lookup(90, 100).allot([long, long[:2], long])
    assert [len(d) for d in cut] == [len(cut[0]), 2, len(cut[0])] and len(cut[0]) >= 2


def test_verify_pass_equals_one_decode_step_per_token(tiny_hf):
    nlp = tiny_nlp(tiny_hf)
    fast = FastLlama(nlp.get_pipe("llama").model.model)
    prompts = torch.tensor([[3, 9, 4, 7, 2], [8, 1, 6, 0, 0]])
    lengths = torch.tensor([5, 3])
    steps = torch.tensor([[11, 12, 13], [21, 22, 23]])

    def fresh():
        cache = fast.new_cache(2, 16)
        fast.prefill(prompts, lengths, cache, torch.tensor([0, 1]), start=0)
        return cache

    cache = fresh()
    one_by_one = []
    for j in range(3):
        one_by_one.append(fast.decode(steps[:, j], lengths + j, cache))
    together = fast.verify(steps, lengths, fresh())
    assert together.shape[:2] == (2, 3)
    for j in range(3):
        assert torch.allclose(together[:, j], one_by_one[j], atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_outputs_and_logprobs_do_not_change(tiny_hf, batch_size):
    gen = {"max_new_tokens": 24}
    template = "Repeat after me, word for word, please: {{ text }}"  # a shared prefix too
    on = tiny_nlp(tiny_hf, template=template, generation=gen, batch_size=batch_size)
    off = tiny_nlp(
        tiny_hf, template=template, generation=gen, batch_size=batch_size, prompt_lookup=False
    )
    a = [(d._.llama_completion, d._.llama_logprobs) for d in on.pipe(TEXTS)]
    b = [(d._.llama_completion, d._.llama_logprobs) for d in off.pipe(TEXTS)]
    stats = on.get_pipe("llama").engine.draft_stats
    assert stats.drafted > 0 and stats.kept > 0  # drafts were checked, kept
    assert off.get_pipe("llama").engine.draft_stats.drafted == 0
    for (ta, la), (tb, lb) in zip(a, b):
        assert ta == tb
        assert len(la) == len(lb) <= 24
        assert la == pytest.approx(lb, abs=1e-4)


def test_stop_strings_cut_the_same_with_drafts(tiny_hf):
    # (a stop string inside a *kept* draft: the fuzz test below)
    free = tiny_nlp(tiny_hf, generation={"max_new_tokens": 24}, batch_size=1)
    text = free(TEXTS[0])._.llama_completion
    words = text.split()
    assert len(words) > 3
    stop = words[2]
    gen = {"max_new_tokens": 24, "stop": [stop]}
    on = tiny_nlp(tiny_hf, generation=gen, batch_size=1)
    off = tiny_nlp(tiny_hf, generation=gen, batch_size=1, prompt_lookup=False)
    got = on(TEXTS[0])._.llama_completion
    assert got == off(TEXTS[0])._.llama_completion == text[: text.find(stop)]
    assert on.get_pipe("llama").engine.draft_stats.checked > 0  # drafts ran before the stop


def test_sampling_drafts_nothing(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12, "temperature": 0.8}, batch_size=1)
    list(nlp.pipe(TEXTS))
    assert nlp.get_pipe("llama").engine.draft_stats.drafted == 0


def test_fuzz_drafting_changes_nothing_but_the_steps():
    """Random batches over a 12-token vocabulary (outputs loop, so drafts are often right):
    shared prefixes, refills, EOS and stop ids and stop strings inside drafts, max_new_tokens
    reached mid-draft. Tokens, finish reasons, cut texts and logprobs match no drafting."""
    from spacy_llama.generation.decode_step import SequenceState, Stepper

    vocab = 12
    torch.manual_seed(0)
    fast = FastLlama(LlamaForCausalLM(tiny_config(vocab)).eval(), prepack=False)

    def decode(tokens):
        return " ".join(map(str, tokens))

    def run(prompts, batch, most, lookup, stop_ids, stop):
        stepper = Stepper(GenerationConfig(max_new_tokens=most, stop=stop), stop_ids, decode)
        seqs = [SequenceState(index=i, prompt_len=len(p)) for i, p in enumerate(prompts)]
        batcher = ContinuousBatcher(
            fast, stepper, batch_size=batch, max_new_tokens=most, prompt_lookup=lookup
        )
        batcher.run(prompts, seqs, lambda seq: None)
        return seqs, batcher

    rng = random.Random(0)
    drafted = accepted = 0
    for _ in range(60):
        shared = [rng.randrange(3, vocab) for _ in range(rng.choice([0, 5, 8]))]
        prompts = [
            shared + [rng.randrange(3, vocab) for _ in range(rng.randint(1, 14))]
            for _ in range(rng.randint(1, 7))
        ]
        batch, most = rng.randint(1, 5), rng.randint(1, 20)
        stop_ids = rng.choice([[], [2], [rng.randrange(3, vocab)]])
        stop = rng.choice([[], [f"{rng.randrange(3, vocab)} {rng.randrange(3, vocab)}"]])
        got, batcher = run(prompts, batch, most, True, stop_ids, stop)
        want, _ = run(prompts, batch, most, False, stop_ids, stop)
        drafted += batcher.lookup.stats.drafted
        accepted += batcher.lookup.stats.kept
        for a, b in zip(got, want):
            assert (a.tokens, a.reason, a.text) == (b.tokens, b.reason, b.text)
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert drafted > 500 and accepted > 50  # drafting really ran, and often paid


ROPE_SCALING = {
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    # head_dim 16: 8 factors each; long ones far from the short ones, so a switch shows
    "longrope": {
        "rope_type": "longrope",
        "factor": 2.0,
        "short_factor": [1.0] * 8,
        "long_factor": [1.0 + i for i in range(8)],
    },
}


@pytest.mark.parametrize("rope", sorted(ROPE_SCALING))
def test_drafts_near_the_end_of_the_context_keep_generate_output(rope):
    """Dynamic NTK and LongRoPE take every position's frequencies from the largest position
    of the call: a verify pass that pads a row near the end of the context past
    max_position_embeddings would switch the whole call (and the keys it caches). Greedy
    tokens and log-probs must equal transformers' generate, one prompt at a time."""
    from spacy_llama.generation.decode_step import SequenceState, Stepper

    vocab, ctx = 12, 64
    torch.manual_seed(0)
    cfg = tiny_config(vocab, max_position_embeddings=ctx, rope_scaling=ROPE_SCALING[rope])
    model = LlamaForCausalLM(cfg).eval()

    def generate(prompt, most):
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=most,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[0, len(prompt) :].tolist()
        lps = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.logits, new)]
        return new, lps

    cases = []
    for most in (24, 32):
        rng = random.Random(0)
        top = ctx - most  # the longest prompts fill the context
        prompts = []
        for n in (top, top - 9, top, top - 2, top, top - 5, top - 14, top - 1):
            unit = [rng.randrange(3, vocab) for _ in range(rng.randint(2, 5))]
            prompts.append((unit * n)[:n])  # repeated n-grams: lookup drafts from them
        cases.append((most, prompts, [generate(p, most) for p in prompts]))

    fast = FastLlama(model, prepack=False)
    fed: list = []  # the largest position of every call the rotary embedding sees
    hook = model.model.rotary_emb.register_forward_pre_hook(
        lambda module, args: fed.append(int(args[1].max()))
    )
    stats = DraftStats()
    try:
        for most, prompts, want in cases:
            for batch in (2, 3):
                stepper = Stepper(GenerationConfig(max_new_tokens=most), [], str)
                seqs = [SequenceState(index=i, prompt_len=len(p)) for i, p in enumerate(prompts)]
                ContinuousBatcher(
                    fast, stepper, batch_size=batch, max_new_tokens=most, draft_stats=stats
                ).run(prompts, seqs, lambda seq: None)
                for seq, (tokens, logprobs) in zip(seqs, want):
                    assert seq.tokens == tokens
                    assert seq.logprobs == pytest.approx(logprobs, abs=1e-4)
    finally:
        hook.remove()
    assert stats.drafted > 0 and stats.kept > 0  # drafts were verified
    assert max(fed) < ctx  # no call, not even its padding, reached past the context


def test_rope_limit_is_where_the_rotary_embedding_switches():
    from spacy_llama.generation.continuous import rope_limit

    def limit(rope_scaling, **config):
        cfg = tiny_config(12, max_position_embeddings=64, rope_scaling=rope_scaling, **config)
        return rope_limit(LlamaForCausalLM(cfg))

    assert limit(None) is None
    assert limit({"rope_type": "linear", "factor": 2.0}) is None  # fixed frequencies
    assert limit(ROPE_SCALING["dynamic"]) == 64
    assert limit(ROPE_SCALING["longrope"]) == 64
    # Phi-3 style: LongRoPE switches at the pretraining length, inside the context
    assert limit(ROPE_SCALING["longrope"], original_max_position_embeddings=32) == 32
