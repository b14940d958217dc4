"""The llama component on a tiny random model: batching, results, extensions, errors."""

from __future__ import annotations

import warnings

import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_llama.errors import PromptTooLongError

from .fixtures.helpers import tiny_llama_config, tiny_nlp

TEXTS = [
    "London is a big city in the United Kingdom.",
    "The quick brown fox",
    "Apple is looking at buying a U.K. startup for $1 billion, said the report on Monday.",
    "Cars",
    "Marie Curie won the Nobel Prize.",
    "San Francisco considers banning sidewalk delivery robots.",
    "Autonomous cars shift insurance liability toward manufacturers, a study found.",
    "x y",
]


def hf_greedy(folder, text: str, n: int):
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32)
    ids = tok(text, return_tensors="pt")
    out = model.generate(
        **ids,
        max_new_tokens=n,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=tok.eos_token_id,
        eos_token_id=None,
    )
    new = out.sequences[0, ids["input_ids"].shape[1] :].tolist()
    logprobs = [
        torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, new)
    ]
    return new, logprobs


def test_greedy_equals_transformers_generate(tiny_hf):
    # No EOS in the tiny model's stop ids for this comparison: max_new_tokens decides.
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10, "stop_token_ids": []})
    pipe = nlp.get_pipe("llama")
    pipe.engine._stop_ids = []
    doc = nlp(TEXTS[0])
    ids, logprobs = hf_greedy(tiny_hf, TEXTS[0], 10)
    tok = AutoTokenizer.from_pretrained(str(tiny_hf))
    assert doc._.llama_completion == tok.decode(ids, skip_special_tokens=True)
    assert doc._.llama_logprobs == pytest.approx(logprobs, abs=1e-4)
    assert len(doc._.llama_logprobs) == 10


def test_batch_equals_single(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=8)
    batched = [(d._.llama_completion, d._.llama_logprobs) for d in nlp.pipe(TEXTS, batch_size=8)]
    single = [(nlp(t)._.llama_completion, nlp(t)._.llama_logprobs) for t in TEXTS]
    for (bt, bl), (st, sl) in zip(batched, single):
        assert bt == st
        assert bl == pytest.approx(sl, abs=1e-4)


def test_output_order_and_same_doc_objects(tiny_hf):
    nlp = tiny_nlp(tiny_hf, batch_size=3)
    docs = [nlp.make_doc(t) for t in TEXTS]
    out = list(nlp.get_pipe("llama").pipe(iter(docs), batch_size=5))
    assert all(a is b for a, b in zip(out, docs))
    assert len(out) == len(docs)
    assert all(isinstance(d._.llama_completion, str) for d in out)


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


def test_fast_decoder_equals_transformers_loop(tiny_hf):
    fast = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=3)
    slow = tiny_nlp(tiny_hf, generation={"max_new_tokens": 12}, batch_size=3)
    slow.get_pipe("llama").engine.use_fast_decoder = False
    a = [(d._.llama_completion, d._.llama_logprobs) for d in fast.pipe(TEXTS)]
    b = [(d._.llama_completion, d._.llama_logprobs) for d in slow.pipe(TEXTS)]
    assert fast.get_pipe("llama").engine.fast is not None
    assert slow.get_pipe("llama").engine._fast is None
    for (ta, la), (tb, lb) in zip(a, b):
        assert ta == tb
        assert la == pytest.approx(lb, abs=1e-4)


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


def test_upstream_annotations_untouched(tiny_hf):
    nlp = tiny_nlp(tiny_hf)
    doc = nlp.make_doc("Marie Curie won the Nobel Prize.")
    doc.ents = [doc.char_span(0, 11, label="PERSON")]
    for t in doc:
        t.pos_ = "NOUN"
    before = doc.to_json()
    nlp.get_pipe("llama")(doc)
    after = doc.to_json()
    after.pop("_", None)
    before.pop("_", None)
    assert before == after


def test_empty_and_whitespace_docs_make_no_model_call(tiny_hf):
    nlp = tiny_nlp(tiny_hf)
    engine = nlp.get_pipe("llama").engine
    calls = engine.stats.model_calls
    docs = list(nlp.pipe(["", "   \n "]))
    assert [d._.llama_completion for d in docs] == ["", ""]
    assert [d._.llama_logprobs for d in docs] == [[], []]
    assert engine.stats.model_calls == calls


def test_template_sees_pos_and_ents(tiny_hf):
    template = (
        "{% for t in tokens %}{{ t.text }}/{{ t.pos_ }} {% endfor %}|"
        "{% for e in ents %}{{ e.text }}={{ e.label_ }}@{{ e.start_char }}{% endfor %}|"
        "{{ sents|length }}"
    )
    nlp = tiny_nlp(tiny_hf, template=template)
    pipe = nlp.get_pipe("llama")
    doc = nlp.make_doc("Marie Curie won.")
    doc.ents = [doc.char_span(0, 11, label="PERSON")]
    for t, pos in zip(doc, ["PROPN", "PROPN", "VERB", "PUNCT"]):
        t.pos_ = pos
    [req] = pipe.task.requests([doc])
    assert req.prompt == "Marie/PROPN Curie/PROPN won/VERB ./PUNCT |Marie Curie=PERSON@0|1"


def test_chat_template_and_system(tiny_hf):
    nlp = tiny_nlp(tiny_hf, template="Q: {{ text }}", chat=True)
    pipe = nlp.get_pipe("llama")
    pipe.task.system = "Be brief."
    [req] = pipe.task.requests([nlp.make_doc("Hi")])
    assert req.prompt == "<s>system: Be brief.\n<s>user: Q: Hi\n<s>assistant:"
    assert req.add_special_tokens is False


def test_sampling_is_reproducible_and_batch_independent(tiny_hf):
    gen = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 7, "max_new_tokens": 10}
    nlp = tiny_nlp(tiny_hf, generation=gen, batch_size=4)
    a = [d._.llama_completion for d in nlp.pipe(TEXTS)]
    b = [nlp(t)._.llama_completion for t in TEXTS]
    assert a == b
    other = tiny_nlp(tiny_hf, generation={**gen, "seed": 8})
    c = [d._.llama_completion for d in other.pipe(TEXTS)]
    assert c != a  # a different seed draws differently


def test_stop_strings(tiny_hf):
    nlp = tiny_nlp(tiny_hf, generation={"max_new_tokens": 16})
    full = nlp(TEXTS[2])._.llama_completion
    stop = full[3:5]
    assert stop and stop in full
    nlp2 = tiny_nlp(tiny_hf, generation={"max_new_tokens": 16, "stop": [stop]})
    doc = nlp2(TEXTS[2])
    assert doc._.llama_completion == full[: full.index(stop)]
    assert len(doc._.llama_logprobs) < 16


def test_echo(tiny_hf):
    plain = tiny_nlp(tiny_hf)(TEXTS[1])._.llama_completion
    doc = tiny_nlp(tiny_hf, generation={"echo": True})(TEXTS[1])
    assert doc._.llama_completion == TEXTS[1] + plain


def test_extension_names_configurable_and_docbin_roundtrip(tiny_hf):
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"].update({"completion_attr": "my_text", "logprobs_attr": "my_lp"})
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("llama", config=cfg)
    doc = nlp2("Marie Curie won the Nobel Prize.")
    assert isinstance(doc._.my_text, str) and len(doc._.my_lp) == 8
    db = DocBin(store_user_data=True, docs=[doc])
    [back] = list(DocBin().from_bytes(db.to_bytes()).get_docs(nlp2.vocab))
    assert back._.my_text == doc._.my_text
    assert list(back._.my_lp) == doc._.my_lp  # msgpack gives a tuple back
    # installing the same extension again is a no-op
    tiny_nlp(tiny_hf)
    assert Doc.has_extension("llama_completion")


def test_prompt_truncated_to_context(tiny_hf):
    # tiny model: context 256, max_new_tokens 8 -> 248 prompt tokens
    long_text = " ".join(["London is a big city."] * 120)
    nlp = tiny_nlp(tiny_hf, template="Summarize: {{ text }} END")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = nlp(long_text)
    assert any("truncated" in str(w.message) for w in caught)
    [req] = nlp.get_pipe("llama").task.requests([nlp.make_doc(long_text)])
    assert req.prompt.startswith("Summarize: London") and req.prompt.endswith(" END")
    assert nlp.get_pipe("llama").model.count_tokens(req.prompt) <= 248
    assert isinstance(doc._.llama_completion, str)


def test_prompt_too_long_raises_by_config(tiny_hf):
    long_text = " ".join(["London is a big city."] * 120)
    nlp = spacy.blank("en")
    cfg = tiny_llama_config(tiny_hf)
    cfg["task"]["on_overflow"] = "error"
    nlp.add_pipe("llama", config=cfg)
    with pytest.raises(PromptTooLongError, match="London is a big city"):
        nlp(long_text)


def test_prefill_token_budget_splits_passes_without_changing_results(tiny_hf, monkeypatch):
    from spacy_llama.generation import continuous
    from spacy_llama.generation.rows import group_by_padded_size

    whole = [d._.llama_completion for d in tiny_nlp(tiny_hf, batch_size=8).pipe(TEXTS)]
    monkeypatch.setattr(continuous, "PREFILL_TOKENS", 20)
    nlp = tiny_nlp(tiny_hf, batch_size=8)
    split = [d._.llama_completion for d in nlp.pipe(TEXTS)]
    sizes = nlp.get_pipe("llama").engine.last_prefill_sizes
    assert split == whole
    assert len(sizes) > 1 and sum(sizes) == len(TEXTS)
    assert group_by_padded_size([5, 5, 30, 2], 20) == [[0, 1], [2], [3]]


def test_int8_quantization_is_an_opt_in_with_its_own_cache_key(tiny_hf):
    plain = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10})
    quant = tiny_nlp(tiny_hf, generation={"max_new_tokens": 10}, quantize="int8")
    engine = quant.get_pipe("llama").engine
    a = [d._.llama_logprobs for d in plain.pipe(TEXTS)]
    b = [d._.llama_logprobs for d in quant.pipe(TEXTS)]
    fast = engine.fast
    assert fast is not None and all(p.int8 is not None for p in fast.qkv + fast.down)
    assert fast.lm_head.int8 is None  # reported log-probabilities come from float logits
    # int8 changes the numbers a little, not the picture
    assert a != b
    first_a, first_b = [x[0] for x in a if x], [x[0] for x in b if x]
    assert first_a == pytest.approx(first_b, abs=0.5)
    ids = [1, 2, 3]
    assert engine.cache_key(ids) != plain.get_pipe("llama").engine.cache_key(ids)


def test_int8_scales_each_row_on_its_own():
    from spacy_llama.generation.decoder import Int8Weight

    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    x = torch.randn(2, 48)
    x[1] *= 1000.0  # one token with huge activations in the same batch
    got, want = Int8Weight(weight)(x), x @ weight.T
    # a per-tensor scale would round the small row to a handful of int8 levels
    assert ((got[0] - want[0]).norm() / want[0].norm()).item() < 0.02
    assert ((got[1] - want[1]).norm() / want[1].norm()).item() < 0.02
    half = Int8Weight(weight)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert ((half[0].float() - want[0]).norm() / want[0].norm()).item() < 0.03
    # a bf16 row whose largest value would round to 128 (and wrap to -128) in bf16 arithmetic
    row = torch.tensor([[0.7, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    assert Int8Weight(torch.eye(4))(row)[0, 0].item() == pytest.approx(0.7, abs=0.01)


def test_int8_needs_float32_weights(tiny_hf):
    cfg = tiny_llama_config(tiny_hf, quantize="int8")
    cfg["model"]["dtype"] = "bfloat16"
    with pytest.raises(ValueError, match="float32"):
        spacy.blank("en").add_pipe("llama", config=cfg)


def test_default_chat_is_auto_and_works_on_a_base_model(tmp_path, caplog):
    """Swapping in a model without a chat template needs no other setting (chat = "auto")."""
    import logging

    from .fixtures.tiny import make_tiny_hf, without_chat_template

    base = without_chat_template(make_tiny_hf(tmp_path / "base"))
    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(base), "device": "cpu"}
    nlp = spacy.blank("en")
    with caplog.at_level(logging.INFO, logger="spacy_llama"):
        pipe = nlp.add_pipe("llama", config={"model": model})
    assert nlp.config["components"]["llama"]["task"]["chat"] == "auto"
    assert pipe.task.chat is False
    assert "no chat template, so plain prompts" in caplog.text
    [req] = pipe.task.requests([nlp("Paris is big.")])
    assert req.prompt.startswith("Summarize the text") and req.add_special_tokens
    assert isinstance(nlp("Paris is big.")._.llama_completion, str)


def test_chat_auto_uses_the_template_when_there_is_one(tiny_hf, caplog):
    import logging

    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    nlp = spacy.blank("en")
    with caplog.at_level(logging.INFO, logger="spacy_llama"):
        pipe = nlp.add_pipe("llama", config={"model": model})
    assert pipe.task.chat is True and "using its chat template" in caplog.text
    [req] = pipe.task.requests([nlp("Paris is big.")])
    assert req.prompt.endswith("assistant:") and not req.add_special_tokens


def test_chat_true_still_requires_a_template_and_false_is_plain(tmp_path):
    from .fixtures.tiny import make_tiny_hf, without_chat_template

    base = without_chat_template(make_tiny_hf(tmp_path / "base"))
    with pytest.raises(ValueError, match="no chat template"):
        spacy.blank("en").add_pipe("llama", config=tiny_llama_config(base, chat=True))
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("llama", config=tiny_llama_config(base, chat=False))
    assert pipe.task.requests([nlp("x y")])[0].prompt == "x y"


def test_textcat_chat_auto_picks_the_candidate_prefix(tmp_path, tiny_hf):
    from .fixtures.tiny import make_tiny_hf, without_chat_template

    base = without_chat_template(make_tiny_hf(tmp_path / "base"))
    for folder, prefix in ((base, " "), (tiny_hf, "")):
        nlp = spacy.blank("en")
        model = {"@llama_models": "spacy-llama.HF.v1", "path": str(folder), "device": "cpu"}
        task = {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": ["a", "b"], "chat": "auto"}
        pipe = nlp.add_pipe("llama", config={"model": model, "task": task})
        assert pipe.task.prefix == prefix


def test_labels_meta_and_analyze_pipes_follow_the_task(tiny_hf, tmp_path) -> None:
    """Before: `.labels` was (), meta.json listed no labels, and analyze_pipes showed the
    Completion extensions for every task."""
    import json

    model = {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"}
    nlp = spacy.blank("en")
    textcat = {"@llama_tasks": "spacy-llama.TextCat.v2", "labels": ["pos", "neg"]}
    review = {"@llama_tasks": "spacy-llama.EntityReview.v1", "labels": ["PERSON", "ORG"]}
    nlp.add_pipe("llama", name="cats", config={"model": model, "task": textcat})
    nlp.add_pipe("llama", name="review", config={"model": model, "task": review})
    nlp.add_pipe("llama", name="completion", config={"model": model})
    assert nlp.get_pipe("cats").labels == ("pos", "neg")
    assert nlp.get_pipe("review").labels == ("PERSON", "ORG")
    assert nlp.get_pipe("completion").labels == ()
    summary = nlp.analyze_pipes()["summary"]
    assert summary["cats"]["assigns"] == ["doc.cats"]
    assert summary["review"]["assigns"] == ["span._.llama_label", "span._.llama_scores"]
    assert summary["completion"]["assigns"] == ["doc._.llama_completion", "doc._.llama_logprobs"]
    nlp.to_disk(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["labels"]["cats"] == ["pos", "neg"]
    assert meta["labels"]["review"] == ["PERSON", "ORG"]
    loaded = spacy.load(tmp_path / "p")
    assert loaded.analyze_pipes()["summary"]["cats"]["assigns"] == ["doc.cats"]
