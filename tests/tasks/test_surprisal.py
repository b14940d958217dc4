"""spacy-llama.Surprisal.v1: piece-to-token alignment, windows, perplexity, round trips."""

from __future__ import annotations

import math
from typing import Any, Dict

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_llama.generation.scoring import Scorer
from spacy_llama.tasks.surprisal import align_to_tokens
from spacy_llama.types import TokenLogprobRequest

from ..fixtures.helpers import tiny_model

SMOL = {"@llama_models": "spacy-llama.SmolLM2.v1", "device": "cpu", "dtype": "float32"}


def surprisal_nlp(model: Dict[str, Any], **task: Any) -> spacy.Language:
    nlp = spacy.blank("en")
    config = {"@llama_tasks": "spacy-llama.Surprisal.v1", **task}
    nlp.add_pipe("llama", config={"model": model, "task": config, "generation": {}})
    return nlp


def test_align_by_character_offsets():
    doc = spacy.blank("en")("I can't go")  # tokens: I | ca | n't | go
    assert [t.text for t in doc] == ["I", "ca", "n't", "go"]
    offsets = [(0, 0), (0, 1), (1, 5), (5, 7), (7, 8), (8, 10)]
    # BOS (no context), "I", " can" (space + ca + n), "'t", " ", "go"
    logprobs = [None, -1.0, -4.0, -2.0, -0.5, -3.0]
    values = align_to_tokens(doc, offsets, logprobs)
    # " can" covers 2 chars of "ca" and 1 of "n't": shared 2:1.
    assert values[0] == pytest.approx(-1.0)
    assert values[1] == pytest.approx(-4.0 * 2 / 3)
    assert values[2] == pytest.approx(-4.0 / 3 - 2.0)
    assert values[3] == pytest.approx(-0.5 - 3.0)  # the whitespace piece goes to the next token
    assert sum(values) == pytest.approx(sum(x for x in logprobs if x is not None))


def test_request_is_the_doc_text(tiny_hf):
    nlp = surprisal_nlp(tiny_model(tiny_hf))
    doc = Doc(nlp.vocab, words=["Apple", "rose"], pos=["PROPN", "VERB"], ents=["B-ORG", "O"])
    req = nlp.get_pipe("llama").task.requests([doc])[0]
    assert isinstance(req, TokenLogprobRequest) and req.text == "Apple rose "
    assert req.add_special_tokens is True


def test_tiny_model_values_and_perplexity(tiny_hf):
    nlp = surprisal_nlp(tiny_model(tiny_hf))
    doc = nlp("London is a big city in the United Kingdom.")
    res = Scorer(nlp.get_pipe("llama").model, batch_size=2).token_logprobs(
        [TokenLogprobRequest(doc.text)]
    )[0]
    pieces = [x for x in res.logprobs if x is not None]
    values = [t._.llama_logprob for t in doc]
    assert all(v is not None and v < 0 for v in values)
    assert sum(values) == pytest.approx(sum(pieces), abs=1e-4)
    assert doc._.llama_perplexity == pytest.approx(math.exp(-sum(pieces) / len(pieces)))


def test_long_doc_in_windows(tiny_hf):
    nlp = surprisal_nlp(tiny_model(tiny_hf))
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    model = nlp.get_pipe("llama").model
    assert model.count_tokens(text) > model.context_length
    doc = nlp(text)
    assert all(t._.llama_logprob is not None for t in doc)
    # The tokens carry every scored piece of every window, once.
    res = Scorer(model, batch_size=4).token_logprobs([TokenLogprobRequest(text)])[0]
    assert len(Scorer(model, batch_size=4)._windows(0, len(res.token_ids))) > 1
    pieces = [x for x in res.logprobs if x is not None]
    assert len(pieces) == len(res.token_ids) - 1
    assert sum(t._.llama_logprob for t in doc) == pytest.approx(sum(pieces), abs=1e-3)


def test_extensions_docbin_roundtrip(tiny_hf):
    nlp = surprisal_nlp(tiny_model(tiny_hf), logprob_attr="lp", perplexity_attr="ppl")
    assert nlp.get_pipe("llama").task.extensions == ["lp", "ppl"]
    doc = nlp("Apple is looking at buying a startup.")
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    back = list(DocBin().from_bytes(data).get_docs(nlp.vocab))[0]
    assert [t._.lp for t in back] == pytest.approx([t._.lp for t in doc])
    assert back._.ppl == pytest.approx(doc._.ppl)


def test_failure_modes(tiny_hf):
    nlp = surprisal_nlp(tiny_model(tiny_hf), add_bos=False)
    doc = nlp("")
    assert len(doc) == 0 and doc._.llama_perplexity is None
    one = nlp("a")  # one piece: without BOS it has no context
    assert one[0]._.llama_logprob is None and one._.llama_perplexity is None
    with pytest.raises(ValueError, match="distinct identifiers"):
        surprisal_nlp(tiny_model(tiny_hf), logprob_attr="x", perplexity_attr="x")


@pytest.mark.slow
def test_smollm2_prefers_the_plausible_word(smollm2):
    nlp = surprisal_nlp(SMOL)
    good, bad = nlp.pipe(["The capital of France is Paris.", "The capital of France is banana."])
    assert good[-2]._.llama_logprob > bad[-2]._.llama_logprob
    assert good._.llama_perplexity < bad._.llama_perplexity
    # Every token after the first has a value; the first only if the tokenizer adds a BOS.
    assert all(t._.llama_logprob is not None for t in good[1:])
    bos = smollm2.encode("The")[0] != smollm2.encode("The", add_special_tokens=False)[0]
    assert (good[0]._.llama_logprob is not None) == bos


def test_v2_window_and_stride_set_the_context(tiny_hf):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 3)
    v1 = surprisal_nlp(tiny_model(tiny_hf))
    model = v1.get_pipe("llama").model
    n = model.count_tokens(text)
    # a window wider than the text changes nothing
    wide = surprisal_nlp(tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v2"})
    wide.get_pipe("llama").task.window = n + 5
    assert [t._.llama_logprob for t in wide(text)] == pytest.approx(
        [t._.llama_logprob for t in v1(text)], abs=1e-5
    )
    small = surprisal_nlp(
        tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v2"}, window=8, stride=3
    )
    request = small.get_pipe("llama").task.requests([small.make_doc(text)])[0]
    assert (request.window, request.stride) == (8, 3)
    scorer = Scorer(model, batch_size=4)
    windows = scorer._windows(0, n, window=8, stride=3)
    assert [(w.begin, w.end) for w in windows[:3]] == [(0, 8), (3, 11), (6, 14)]
    assert windows[-1].end == n
    # what the component assigns is the Scorer's per-window values, not full-context ones
    doc = small(text)
    full = scorer.token_logprobs([TokenLogprobRequest(text)])[0].logprobs
    short = scorer.token_logprobs([TokenLogprobRequest(text, window=8, stride=3)])[0].logprobs
    assert short[:8] == pytest.approx(full[:8], abs=1e-5)  # the first window sees the same
    assert short[20:] != pytest.approx(full[20:], abs=1e-5)  # later tokens see 5-8, not 20+
    pieces = [x for x in short if x is not None]
    assert sum(t._.llama_logprob for t in doc) == pytest.approx(sum(pieces), abs=1e-3)


def test_v2_rejects_a_stride_not_below_the_window(tiny_hf):
    with pytest.raises(ValueError, match="stride = 8 with window = 8"):
        surprisal_nlp(
            tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v2"}, window=8, stride=8
        )
    with pytest.raises(ValueError, match="window = 1"):
        surprisal_nlp(tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v2"}, window=1)


# -- Surprisal.v3: the first word is scored on a tokenizer without BOS (issue 26) ------------
def test_v3_scores_the_first_word_on_smollm2(smollm2):
    """SmolLM2's tokenizer adds no BOS: v2's add_bos = true leaves the first word None;
    v3 scores it after <|endoftext|>, and every other piece keeps its context."""
    text = "Paris is the capital of France."
    v2 = surprisal_nlp(SMOL, **{"@llama_tasks": "spacy-llama.Surprisal.v2"})(text)
    v3 = surprisal_nlp(SMOL, **{"@llama_tasks": "spacy-llama.Surprisal.v3"})(text)
    assert v2[0]._.llama_logprob is None
    assert all(t._.llama_logprob is not None and t._.llama_logprob < 0 for t in v3)
    endoftext = smollm2.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = [endoftext] + smollm2.encode(text, add_special_tokens=False)
    scorer = Scorer(smollm2, batch_size=4)
    (direct,) = scorer.token_logprobs([TokenLogprobRequest(text, prefix_ids=[endoftext])])
    assert direct.token_ids == ids and direct.logprobs[0] is None
    assert v3[0]._.llama_logprob == pytest.approx(direct.logprobs[1], abs=2e-3)
    scored = direct.logprobs[1:]
    assert v3._.llama_perplexity == pytest.approx(math.exp(-sum(scored) / len(scored)), rel=1e-3)


def test_v3_keeps_a_tokenizer_that_adds_its_own_bos(tiny_hf):
    """The tiny LLaMA tokenizer adds <s>: v3's auto start is that BOS, as v2's add_bos."""
    v2 = surprisal_nlp(tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v2"})
    v3 = surprisal_nlp(tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v3"})
    text = "London is a big city."
    assert [t._.llama_logprob for t in v3(text)] == pytest.approx(
        [t._.llama_logprob for t in v2(text)]
    )
    (req,) = v3.get_pipe("llama").task.requests([v3.make_doc(text)])
    assert req.add_special_tokens and req.prefix_ids == []


def test_v3_start_none_and_named_token(tiny_hf):
    none = surprisal_nlp(
        tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v3", "start": "none"}
    )
    (req,) = none.get_pipe("llama").task.requests([none.make_doc("London")])
    assert req.prefix_ids == [] and not req.add_special_tokens  # nothing before the text
    named = surprisal_nlp(
        tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v3", "start": "</s>"}
    )
    (req,) = named.get_pipe("llama").task.requests([named.make_doc("London")])
    assert req.prefix_ids == [2] and not req.add_special_tokens
    assert named("London is big.")[0]._.llama_logprob is not None


def test_v3_unknown_start_token_is_a_coded_error(tiny_hf):
    with pytest.raises(Exception, match=r"E833.*'<\|nope\|>'"):
        surprisal_nlp(
            tiny_model(tiny_hf), **{"@llama_tasks": "spacy-llama.Surprisal.v3", "start": "<|nope|>"}
        )
