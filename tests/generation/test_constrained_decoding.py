"""Constrained decoding in the engine: every output matches its constraint, in any batch,
with every speed-up on, and unconstrained rows are not changed by constrained neighbours."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

import pytest
import torch

from spacy_llama.errors import ConstraintError
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.engine import Engine
from spacy_llama.generation.sqlite_cache import SQLiteCache
from spacy_llama.models.hf import load_hf_folder
from spacy_llama.types import Constraint, GenerationRequest, GenerationResult

from ..fixtures.helpers import tiny_nlp
from ..fixtures.tiny import CORPUS

LABELS = ["ORG", "GPE", "PERSON"]
SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"enum": LABELS},
                    "text": {"type": "string", "maxLength": 8},
                },
                "required": ["label", "text"],
                "additionalProperties": False,
            },
            "maxItems": 1,
        }
    },
    "required": ["entities"],
    "additionalProperties": False,
}
PROMPTS = list(dict.fromkeys(CORPUS))  # 7 distinct texts


def valid_entities(text: str) -> bool:
    """SCHEMA, checked by hand (jsonschema is not a dependency)."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict) or set(data) != {"entities"}:
        return False
    items = data["entities"]
    return isinstance(items, list) and len(items) <= 1 and all(
        isinstance(e, dict) and set(e) == {"label", "text"} and e["label"] in LABELS
        and isinstance(e["text"], str) and len(e["text"]) <= 8
        for e in items
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_hf):
    return load_hf_folder(tiny_hf, device="cpu", dtype="float32")


def run(model: Any, prompts: List[str], *, batch_size: int = 4, constraint=None, **kw) -> list:
    opts = {k: kw.pop(k) for k in ("fast_decoder", "prefix_cache", "prompt_lookup", "cache")
            if k in kw}  # fmt: skip
    engine = Engine(model, GenerationConfig(**kw), batch_size=batch_size, **opts)
    return engine.run([GenerationRequest(p, constraint=constraint) for p in prompts])


def summary(results: List[GenerationResult]) -> list:
    return [(r.text, r.token_ids, r.finish_reason, r.error) for r in results]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_outputs_are_valid_and_batch_invariant(model, temperature):
    """Batch 1 vs 4 vs 2 (more prompts than slots: refill and compaction), reversed order,
    prefix cache and prompt lookup on (greedy) and off: the same outputs, all valid."""
    kw = dict(json_schema=SCHEMA, max_new_tokens=80, temperature=temperature, seed=3)
    base = summary(run(model, PROMPTS, batch_size=1, prefix_cache=False, prompt_lookup=False, **kw))
    for r in base:
        assert r[2] == "stop" and r[3] is None and valid_entities(r[0]), r
    assert summary(run(model, PROMPTS, batch_size=4, **kw)) == base
    assert summary(run(model, PROMPTS, batch_size=2, **kw)) == base
    assert summary(run(model, PROMPTS[::-1], batch_size=3, **kw)) == base[::-1]
    assert summary(run(model, PROMPTS, batch_size=4, fast_decoder=False, **kw)) == base


def test_regex_and_choices_outputs_match(model):
    for r in run(model, PROMPTS, regex=r"[A-Z][a-z]{2,6}( [0-9]{1,3})?", max_new_tokens=20):
        assert r.finish_reason == "stop" and re.fullmatch(r"[A-Z][a-z]{2,6}( [0-9]{1,3})?", r.text)
    choices = ["London", "Paris", "the United Kingdom"]
    for temperature in (0.0, 1.5):
        out = run(model, PROMPTS, choices=choices, temperature=temperature, max_new_tokens=20)
        assert all(r.text in choices and r.finish_reason == "stop" for r in out)


def test_each_request_keeps_its_own_constraint_through_refill_and_compaction(model):
    """Different choices per request, 7 requests on 2 slots: a grammar state that stayed
    with a slot instead of its sequence would produce another request's choice."""
    cons = [Constraint("choices", json.dumps([f"{w}{i}" for w in ("ab", "cd")])) for i in range(7)]
    engine = Engine(model, GenerationConfig(max_new_tokens=12), batch_size=2)
    out = engine.run([GenerationRequest(p, constraint=c) for p, c in zip(PROMPTS, cons)])
    for i, r in enumerate(out):
        assert r.text in (f"ab{i}", f"cd{i}"), (i, r.text)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stepper_leaves_unconstrained_rows_bit_identical(model, temperature):
    """On the same logits, rows without a grammar choose the same tokens with the same
    logprobs, bit for bit, whether or not other rows of the step are constrained."""
    from spacy_llama.generation.decode_step import SequenceState, Stepper
    from spacy_llama.generation.sampling import make_generators

    cfg = GenerationConfig(max_new_tokens=5, temperature=temperature, top_p=0.9)
    engine = Engine(model, cfg)
    logits = torch.randn(4, 320, generator=torch.Generator().manual_seed(0)) * 3

    def step(constrained: bool) -> list:
        seqs = [
            SequenceState(index=k, prompt_len=1, generator=make_generators([k])[0])
            for k in range(4)
        ]
        if constrained:
            for k in (1, 3):
                seqs[k].grammar = engine.grammar(Constraint("regex", "[0-9]+")).start()
        Stepper(cfg, [2], model.decode).step(logits, seqs)
        return [(s.tokens, s.logprobs) for s in seqs]

    plain, mixed = step(False), step(True)
    assert plain[0] == mixed[0] and plain[2] == mixed[2]
    assert all(model.decode(mixed[k][0]).isdigit() for k in (1, 3))


def test_unconstrained_rows_equal_their_unconstrained_run(model):
    """A mixed batch: rows without a constraint get the tokens of a run with no constraint
    at all, greedy and sampled (logprobs up to float rounding: constrained rows finish
    earlier, so later steps run at other batch sizes)."""
    for temperature in (0.0, 1.0):
        cfg = GenerationConfig(max_new_tokens=12, temperature=temperature, seed=5)
        alone = Engine(model, cfg, batch_size=4).run([GenerationRequest(p) for p in PROMPTS])
        mixed_reqs = [
            GenerationRequest(p, constraint=Constraint("regex", "[0-9]{3}") if i % 2 else None)
            for i, p in enumerate(PROMPTS)
        ]
        mixed = Engine(model, cfg, batch_size=4).run(mixed_reqs)
        for i, (a, m) in enumerate(zip(alone, mixed)):
            if i % 2:
                assert re.fullmatch("[0-9]{3}", m.text)
            else:
                assert (a.token_ids, a.text) == (m.token_ids, m.text)
                assert a.logprobs == pytest.approx(m.logprobs, abs=1e-5)
        assert any(a.token_ids != m.token_ids for a, m in zip(alone[1::2], mixed[1::2]))


def test_logprobs_are_the_model_s_own_under_a_constraint(model):
    """log-softmax of the raw logits (no mask) of each chosen token, as a plain forward pass
    over prompt + output gives it."""
    [res] = run(model, PROMPTS[:1], regex="[0-9]{4}", max_new_tokens=8)
    prompt = model.encode(PROMPTS[0])
    ids = torch.tensor([prompt + res.token_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model.model(ids).logits[0].float(), -1)
    want = [float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(res.token_ids)]
    assert res.logprobs == pytest.approx(want, abs=1e-4)
    assert min(res.logprobs) < -1.0  # a random model does not want digits: honest, not 0


def test_stop_strings_still_cut_constrained_output(model):
    [res] = run(model, PROMPTS[:1], json_schema=SCHEMA, stop=['"entities'], max_new_tokens=40)
    assert res.text == "{" and res.finish_reason == "stop"


def test_length_before_the_grammar_is_complete_is_an_error_and_is_cached(model, tmp_path):
    """E426 is left only where even the shortest complete output does not fit: a request's
    own constraint (a config's fails when the engine is built: E650)."""
    with pytest.raises(ConstraintError, match=r"\[E650\].*max_new_tokens=3.*takes 12 tokens"):
        Engine(model, GenerationConfig(json_schema=SCHEMA, max_new_tokens=3))
    cache = SQLiteCache(tmp_path / "cache.sqlite")
    own = Constraint("json_schema", json.dumps(SCHEMA))
    kw = dict(constraint=own, max_new_tokens=3, cache=cache)
    [res] = run(model, PROMPTS[:1], **kw)
    assert res.finish_reason == "length" and len(res.token_ids) == 3
    assert res.error == (
        "[E426] the output reached max_new_tokens=3 before the json_schema constraint was "
        "complete; raise max_new_tokens"
    )
    [hit] = run(model, PROMPTS[:1], **kw)
    assert hit.cached and hit.error == res.error
    # a regex already matched when max_new_tokens is reached: complete, no error
    [ok] = run(model, PROMPTS[:1], regex="[0-9]+", max_new_tokens=3)
    assert ok.finish_reason == "length" and ok.error is None


def test_request_constraint_enters_the_cache_key(model, tmp_path):
    cache = SQLiteCache(tmp_path / "cache.sqlite")
    a = run(model, PROMPTS[:1], constraint=Constraint("regex", "[0-9]{2}"), cache=cache)[0]
    b = run(model, PROMPTS[:1], constraint=Constraint("regex", "[a-z]{2}"), cache=cache)[0]
    assert not b.cached and re.fullmatch("[a-z]{2}", b.text) and re.fullmatch("[0-9]{2}", a.text)


def test_grammar_state_is_freed_when_a_row_finishes(model):
    engine = Engine(model, GenerationConfig(max_new_tokens=4, regex="[0-9]+"), batch_size=2)
    seen: List[Optional[Any]] = []
    from spacy_llama.generation import decode_step

    original = decode_step.Stepper._close

    def close(self: Any, seq: Any) -> None:
        original(self, seq)
        seen.append(seq.grammar)

    decode_step.Stepper._close = close  # type: ignore[method-assign]
    try:
        engine.run([GenerationRequest(p) for p in PROMPTS[:3]])
    finally:
        decode_step.Stepper._close = original  # type: ignore[method-assign]
    assert len(seen) == 3 and seen == [None, None, None]


def test_invalid_constraints_fail_when_the_pipeline_is_built(tiny_hf):
    with pytest.raises(ConstraintError, match=r"E422.*regex.*llguidance"):
        tiny_nlp(tiny_hf, generation={"regex": "[0-9"})
    with pytest.raises(ConstraintError, match=r'E424.*"if"'):
        tiny_nlp(tiny_hf, generation={"json_schema": {"type": "object", "if": {}}})
    with pytest.raises(Exception, match="E420"):
        tiny_nlp(tiny_hf, generation={"regex": "a", "choices": ["a"]})


def test_pipeline_with_chat_template_and_a_schema_file(tiny_hf, tmp_path):
    """The settings as a pipeline config gives them: a schema file, the chat template on;
    every doc's completion is valid."""
    import spacy

    from ..fixtures.helpers import write_config

    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    cfg_path = write_config(tmp_path, tiny_hf, max_new_tokens=80)
    text = cfg_path.read_text().replace("chat = false", "chat = true")
    text += f"json_schema_path = {json.dumps(str(path))}\n"
    config = spacy.util.load_config_from_str(text)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    pipe = nlp.get_pipe("llama")
    assert pipe.engine.config.constraint == Constraint("json_schema", json.dumps(SCHEMA))
    docs = list(nlp.pipe(PROMPTS[:3]))
    assert all(valid_entities(d._.llama_completion) for d in docs)


def test_prompt_lookup_drafts_are_cut_to_the_grammar_and_keep_the_output(model, monkeypatch):
    """The answer copies the prompt's start, then leaves it (one choice), so prompt lookup
    drafts the prompt's continuation (forced tokens off: they would draft it instead).
    Drafts are cut to what the grammar allows: every
    drafted token the model checks is kept (uncut, 2 of 10 were checked in vain), and the
    output is the one decoding without drafts gives."""
    from spacy_llama.generation import continuous

    monkeypatch.setattr(continuous, "MAX_FORCED", 0)
    text = PROMPTS[0]
    choice = text[:16] + "zq zq"
    cfg = GenerationConfig(max_new_tokens=40, choices=[choice])
    prompt = GenerationRequest(text + " " + text)
    with_drafts = Engine(model, cfg, batch_size=1)
    [a] = with_drafts.run([prompt])
    [b] = Engine(model, cfg, batch_size=1, prompt_lookup=False).run([prompt])
    assert a.text == b.text == choice and a.token_ids == b.token_ids
    stats = with_drafts.draft_stats
    assert stats.kept > 0 and stats.checked == stats.kept
