"""The losses of the entity tasks: EntityReview's cross-entropy over the candidate labels
of each gold entity (from the engine's own ScoreRequest), and generative NER's
teacher-forced loss on the task's rendering of the gold entities. Both go down under
training and equal a hand computation on one doc."""

from __future__ import annotations

import pytest
import torch
from thinc.api import SGD

from spacy_llama.tasks.labels import softmax
from spacy_llama.training.entity_losses import review_loss
from spacy_llama.training.losses import answer_loss

from .builders import ENT_GOLD, entity_examples, entity_nlp

REVIEW = {"@llama_tasks": "spacy-llama.EntityReview.v1"}
NER = {"@llama_tasks": "spacy-llama.NER.v1"}


def _losses(nlp, egs, steps: int, lr: float) -> list:
    opt = SGD(lr, L2=0.0, grad_clip=0.0)
    return [nlp.update(egs, sgd=opt)["llama"] for _ in range(steps)]


@pytest.mark.parametrize("task,lr", [(REVIEW, 0.05), ({**REVIEW, "calibrate": True}, 0.05)])
def test_update_lowers_the_review_loss(tiny_hf, task, lr) -> None:
    torch.manual_seed(0)  # peft's random lora_A
    nlp = entity_nlp(tiny_hf, task)
    egs = entity_examples(nlp)
    nlp.initialize(lambda: egs)
    losses = _losses(nlp, egs, 5, lr)
    assert losses[-1] < losses[0] * 0.85, losses


@pytest.mark.parametrize("calibrate", [False, True])
def test_review_loss_is_the_cross_entropy_of_the_engines_scores(tiny_hf, calibrate) -> None:
    """One doc, one gold entity: -log softmax(engine's label scores [- prior])[gold]. The
    adapter is untrained (B = 0), so the engine's model is the one the loss runs."""
    nlp = entity_nlp(tiny_hf, {**REVIEW, "calibrate": calibrate})
    pipe = nlp.get_pipe("llama")
    eg = entity_examples(nlp, [ENT_GOLD[0]])[0]  # London: CITY
    doc, targets = pipe.task.review_targets(eg)
    assert targets == ["CITY"] and [e.text for e in doc.ents] == ["London"]
    results = pipe.engine.run_all(pipe.task.requests([doc]))
    values = results[-1].means  # length_normalize = true (the default)
    if calibrate:
        values = [v - p for v, p in zip(values, results[0].means)]
    want = -torch.log(torch.tensor(softmax(values)[1]))  # labels: COMPANY, CITY
    with torch.no_grad():
        got = review_loss(pipe.task, pipe.model, pipe.adapter.peft, [eg])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_review_targets_follow_the_gold_and_the_none_label(tiny_hf) -> None:
    """A gold label the task lacks is taught as none_label; the prompt shows the upstream
    label when the predicted doc has the same span (what inference sees)."""
    nlp = entity_nlp(tiny_hf, {**REVIEW, "none_label": "OTHER"})
    task = nlp.get_pipe("llama").task
    gold = [("Apple is in London.", [("Apple", "COMPANY"), ("London", "GPE")])]
    eg = entity_examples(nlp, gold)[0]
    eg.predicted.ents = [eg.predicted.char_span(0, 5, label="ORG")]
    doc, targets = task.review_targets(eg)
    assert targets == ["COMPANY", "OTHER"]
    assert [(e.text, e.label_) for e in doc.ents] == [("Apple", "ORG"), ("London", "GPE")]
    assert [(e.text, e.label_) for e in eg.predicted.ents] == [("Apple", "ORG")]  # unchanged
    plain = entity_nlp(tiny_hf, REVIEW).get_pipe("llama").task
    assert plain.review_targets(eg)[1] == ["COMPANY"]  # no none_label: GPE is left out


def test_update_lowers_the_ner_loss(tiny_hf) -> None:
    torch.manual_seed(0)
    nlp = entity_nlp(tiny_hf, NER)
    egs = entity_examples(nlp)
    nlp.initialize(lambda: egs)
    losses = _losses(nlp, egs, 10, 0.02)
    assert losses[-1] < losses[0] * 0.8, losses


def test_ner_loss_masks_the_prompt_and_renders_as_the_task_parses(tiny_hf) -> None:
    """The mean NLL of "\\nCOMPANY: Apple\\nCITY: U.K." (then the stop token) after the
    task's own prompt; the prompt's tokens are not scored."""
    nlp = entity_nlp(tiny_hf, NER)
    pipe = nlp.get_pipe("llama")
    eg = entity_examples(nlp, [ENT_GOLD[1]])[0]
    answer = "\nCOMPANY: Apple\nCITY: U.K."
    with torch.no_grad():
        got = answer_loss(pipe.task, pipe.model, pipe.adapter.peft, [eg])
        prompt = pipe.model.encode(pipe.task.requests([eg.predicted])[0].prompt)
        tokens = pipe.model.encode(answer, add_special_tokens=False) + [2]
        logits = pipe.adapter.peft(input_ids=torch.tensor([prompt + tokens])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        want = -torch.stack([logp[len(prompt) - 1 + j, t] for j, t in enumerate(tokens)]).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # What is trained is what the task reads back: the same spans, nothing unaligned.
    spans, problems = pipe.task.align(eg.predicted, pipe.task.parse(answer))
    assert [(s.text, s.label_) for s in spans] == [("Apple", "COMPANY"), ("U.K.", "CITY")]
    assert problems == []


def test_ner_renders_none_for_a_doc_without_entities(tiny_hf) -> None:
    task = entity_nlp(tiny_hf, {**NER, "verbalizers": {"CITY": "town"}}).get_pipe("llama").task
    assert task.render([]) == "none" and task.parse("none") == []
    eg = entity_examples(entity_nlp(tiny_hf, NER), [ENT_GOLD[0]])[0]
    assert task.render(eg.reference.ents) == "town: London"  # the verbalizer, as few-shot


NER_V2 = {"@llama_tasks": "spacy-llama.NER.v2"}


def test_ner_v2_trains_on_the_json_its_grammar_decodes(tiny_hf) -> None:
    """NER.v2 decodes JSON under its per-doc schema; its training answer must be that JSON
    (not NER.v1's "TYPE: text" lines it inherits), token for token accepted by the doc's
    grammar, starting right after the prompt (the grammar admits no leading newline), and
    read back by its own assign as the gold spans."""
    from spacy_llama.types import GenerationResult

    nlp = entity_nlp(tiny_hf, NER_V2, max_new_tokens=16)  # its shortest JSON takes 12 (E650)
    pipe = nlp.get_pipe("llama")
    eg = entity_examples(nlp, [ENT_GOLD[1]])[0]
    answer = pipe.task.gold_answer(eg.reference)
    assert answer == (
        '{"entities": [{"label": "COMPANY", "text": "Apple"}, '
        '{"label": "CITY", "text": "U.K."}]}'
    )
    request = pipe.task.requests([eg.predicted])[0]
    grammar = pipe.engine.grammar(pipe.engine.constraint(request)).start()
    tokens = pipe.model.encode(answer, add_special_tokens=False)
    assert grammar.valid_prefix(tokens) == len(tokens)
    for token in tokens:
        assert grammar.accept(token)
    assert grammar.accepting
    doc = nlp.make_doc(eg.predicted.text)
    pipe.task.assign([doc], [GenerationResult(text=answer, finish_reason="stop")])
    assert [(s.text, s.label_) for s in doc.ents] == [("Apple", "COMPANY"), ("U.K.", "CITY")]
