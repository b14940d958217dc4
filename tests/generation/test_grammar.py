"""generation/grammar.py and the constraint settings: masks, compiling, caching, and the
coded errors of bad constraints."""

from __future__ import annotations

import json

import pytest
import torch

from spacy_llama.errors import ConstraintError
from spacy_llama.generation import grammar as G
from spacy_llama.generation.config import GenerationConfig
from spacy_llama.generation.continuous import grammar_prefix
from spacy_llama.generation.decode_step import SequenceState
from spacy_llama.generation.response_cache import response_key
from spacy_llama.types import Constraint

from ..fixtures.tiny import make_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["ORG", "GPE"]}, "text": {"type": "string"}},
    "required": ["label", "text"],
    "additionalProperties": False,
}
ANSWER = '{"label": "GPE", "text": "London"}'
EXTRA = 8  # output-layer rows past the tokenizer's tokens


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def compiler(tok):
    return G.compiler_for(tok, len(tok) + EXTRA, [2])


def allowed_ids(row: G.RowGrammar, width: int) -> set:
    mask = G.bitmask(1, width)
    row.fill(mask, 0)
    return set(G.allowed(mask, width)[0].nonzero().flatten().tolist())


def test_token_bytes_spell_the_text_and_pad_missing_ids(tok):
    pieces, special = G.token_bytes(tok, len(tok) + EXTRA)
    ids = tok("Apple is in London, €1 billion.", add_special_tokens=False)["input_ids"]
    assert b"".join(pieces[i] for i in ids) == "Apple is in London, €1 billion.".encode()
    assert pieces[len(tok) :] == [b""] * EXTRA
    assert set(special) >= {0, 1, 2} and all(pieces[i].startswith(b"\xff") for i in special)


def test_masks_agree_with_llguidance_token_by_token(tok, compiler):
    """At every step of a valid answer, the mask is the one llguidance's own numpy API
    fills for a matcher built directly from the schema; every allowed token is one the
    matcher accepts (it may accept more: where bytes are forced, the mask keeps to their
    canonical tokens); ids past the tokenizer and special ids are never allowed."""
    import llguidance
    import llguidance.numpy

    width = len(tok) + EXTRA
    row = compiler.compile(Constraint("json_schema", json.dumps(SCHEMA))).start()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(SCHEMA), defaults=G.JSON_DEFAULTS
    )
    direct = llguidance.LLMatcher(compiler.tokenizer, grammar)
    for tid in tok(ANSWER, add_special_tokens=False)["input_ids"]:
        got = allowed_ids(row, width)
        theirs = llguidance.numpy.allocate_token_bitmask(1, width)
        llguidance.numpy.fill_next_token_bitmask(direct, theirs, 0)
        assert got == set(
            G.allowed(torch.from_numpy(theirs), width)[0].nonzero().flatten().tolist()
        )
        assert tid in got
        assert all(row.matcher.validate_tokens([t]) == 1 for t in got)
        assert not got & set(range(len(tok), width)) and not got & {0, 1}
        assert row.accept(tid) and direct.consume_token(tid)
    assert row.terminated and row.accepting
    assert allowed_ids(row, width) == {2}  # only the stop token is left


def test_mask_logits_touches_only_constrained_rows(tok, compiler):
    width = len(tok) + EXTRA
    row = compiler.compile(Constraint("choices", json.dumps(["London", "Paris"]))).start()
    logits = torch.randn(3, width)
    out = mask_rows = G.mask_logits(logits, [1], [row], width)
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    finite = set(torch.isfinite(mask_rows[1]).nonzero().flatten().tolist())
    assert finite == allowed_ids(row, width) and finite
    assert torch.equal(out[1][list(finite)], logits[1][list(finite)])


def test_draft_is_cut_to_the_grammar_prefix_and_the_matcher_stays(tok, compiler):
    row = compiler.compile(Constraint("regex", "[0-9]+")).start()
    digits = tok("123", add_special_tokens=False)["input_ids"]
    letters = tok("ab", add_special_tokens=False)["input_ids"]
    seq = SequenceState(index=0, prompt_len=1, grammar=row)
    assert grammar_prefix(seq, digits + letters) == digits
    assert grammar_prefix(seq, letters) == []
    assert row.accept(digits[0])  # nothing was consumed by the checks
    row.rollback(1)
    assert grammar_prefix(seq, digits) == digits
    plain = SequenceState(index=1, prompt_len=1)
    assert grammar_prefix(plain, letters) == letters


def test_compiled_grammars_are_cached_least_recently_used_first_out(tok, compiler, monkeypatch):
    monkeypatch.setattr(G, "CACHE_SIZE", 2)
    a, b, c = (Constraint("regex", r) for r in ("a+", "b+", "c+"))
    first = compiler.compile(a)
    assert compiler.compile(a) is first
    compiler.compile(b)
    compiler.compile(a)  # a is now the most recent
    compiler.compile(c)  # evicts b
    assert compiler.compile(a) is first
    assert (b.kind, b.spec) not in compiler._cache
    assert G.compiler_for(tok, len(tok) + EXTRA, [2]) is compiler  # one per tokenizer


@pytest.mark.parametrize(
    "constraint, code, words",
    [
        (Constraint("json_schema", "{not json"), "E421", ["json_schema", "JSON"]),
        (Constraint("regex", "[0-9"), "E422", ["regex", "llguidance", "unclosed"]),
        (
            Constraint("json_schema", json.dumps({"type": "object", "if": {"type": "string"}})),
            "E424",
            ["json_schema", "llguidance", '"if"'],
        ),
        (Constraint("choices", "[]"), "E423", ["choices"]),
        (Constraint("choices", '["a", 3]'), "E423", ["choices"]),
    ],
)
def test_bad_constraints_have_coded_messages(compiler, constraint, code, words):
    with pytest.raises(ConstraintError) as e:
        compiler.compile(constraint)
    assert str(e.value).startswith(f"[{code}]")
    for word in words:
        assert word in str(e.value)


def test_config_takes_one_constraint_setting(tmp_path):
    with pytest.raises(ValueError, match=r"E420.*regex, choices"):
        GenerationConfig(regex="a+", choices=["a"])
    with pytest.raises(ValueError, match="E421"):
        GenerationConfig(json_schema="{not json")
    with pytest.raises(ValueError, match="E428"):
        GenerationConfig(json_schema="[1, 2]")
    with pytest.raises(ValueError, match="E423"):
        GenerationConfig(choices=[])
    with pytest.raises(ValueError, match="E427"):
        GenerationConfig(json_schema_path=str(tmp_path / "missing.json"))
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    from_file = GenerationConfig(json_schema_path=str(path))
    inline = GenerationConfig(json_schema=SCHEMA)
    assert (
        from_file.constraint == inline.constraint == Constraint("json_schema", json.dumps(SCHEMA))
    )
    assert GenerationConfig(json_schema=json.dumps(SCHEMA)).constraint == inline.constraint
    assert GenerationConfig(choices=["a", "b"]).constraint == Constraint("choices", '["a", "b"]')
    assert GenerationConfig().constraint is None


def test_constraints_enter_fingerprints_and_cache_keys():
    plain = GenerationConfig()
    # unchanged for unconstrained configs: existing response caches stay valid
    assert plain.fingerprint() == (
        "744364727911b8e89a9d34b1e69427c6bb5f4da54a5f5b9f4444d44bbf23bfec"
    )
    prints = {
        GenerationConfig(**kw).fingerprint()
        for kw in (
            {},
            {"regex": "a+"},
            {"regex": "b+"},
            {"choices": ["a+"]},
            {"json_schema": SCHEMA},
        )
    }
    assert len(prints) == 5
    key = dict(
        model_fingerprint="m", config_fingerprint="c", stop_ids=[2], quantize=None,
        reduced_precision=False, prompt=[1, 2, 3],
    )  # fmt: skip
    keys = {
        response_key(**key),
        response_key(**key, constraint=Constraint("regex", "a+")),
        response_key(**key, constraint=Constraint("regex", "b+")),
        response_key(**key, constraint=Constraint("choices", '["a+"]')),
    }
    assert len(keys) == 4
    assert response_key(**key, constraint=None) == response_key(**key)
