"""The llama component on a tiny random model: results in order on the same Doc objects,
prompts, chat templates, extensions, overflow, labels. (The engine's own tests, decoding,
batching, sampling and stopping, are in tests/generation/.)"""

from __future__ import annotations

import warnings

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_llama.errors import PromptTooLongError

from .fixtures.helpers import TEXTS, tiny_llama_config, tiny_nlp


def test_output_order_and_same_doc_objects(tiny_hf):
    nlp = tiny_nlp(tiny_hf, batch_size=3)
    docs = [nlp.make_doc(t) for t in TEXTS]
    out = list(nlp.get_pipe("llama").pipe(iter(docs), batch_size=5))
    assert all(a is b for a, b in zip(out, docs))
    assert len(out) == len(docs)
    assert all(isinstance(d._.llama_completion, str) for d in out)


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
