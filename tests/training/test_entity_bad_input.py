"""Training data the entity tasks cannot learn from fails in ``initialize`` with a message
naming the task, the attribute and the right format; empty docs are skipped."""

from __future__ import annotations

import pytest
from spacy.training import Example

from spacy_llama.errors import TrainingError

from .builders import ENT_GOLD, entity_examples, entity_nlp

TASKS = ["spacy-llama.NER.v1", "spacy-llama.EntityReview.v1"]


@pytest.mark.parametrize("name", TASKS)
def test_reference_without_entity_annotation_fails(tiny_hf, name) -> None:
    nlp = entity_nlp(tiny_hf, {"@llama_tasks": name})
    egs = entity_examples(nlp)
    text = "A doc nobody annotated."
    egs.append(Example(nlp.make_doc(text), nlp.make_doc(text)))  # ents missing, not "none"
    match = r"\[E535\].*Task\).*example 3 \('A doc nobody.*doc\.ents = \[doc\.char_span"
    with pytest.raises(TrainingError, match=match):
        nlp.initialize(lambda: egs)


@pytest.mark.parametrize("name", TASKS)
def test_entities_with_none_of_the_labels_fail(tiny_hf, name) -> None:
    nlp = entity_nlp(tiny_hf, {"@llama_tasks": name, "labels": ["PER", "LOC"]})
    egs = entity_examples(nlp)
    with pytest.raises(TrainingError, match=r"\[E536\].*\['LOC', 'PER'\].*\['CITY', 'COMPANY'\]"):
        nlp.initialize(lambda: egs)


@pytest.mark.parametrize("name", TASKS)
def test_empty_docs_are_skipped(tiny_hf, name) -> None:
    nlp = entity_nlp(tiny_hf, {"@llama_tasks": name})
    empty = Example(nlp.make_doc(""), nlp.make_doc(""))  # no entity annotation: not checked
    egs = [empty, *entity_examples(nlp, ENT_GOLD[:1])]
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("llama")
    assert pipe.update([empty]) == {"llama": 0.0}
    assert pipe.update(egs)["llama"] > 0
    with pytest.raises(TrainingError, match=r"\[E505\]"):
        nlp.initialize(lambda: [empty])


def test_review_docs_without_entities_add_no_loss(tiny_hf) -> None:
    """A doc annotated with no entities has nothing to review: zero loss, not an error."""
    nlp = entity_nlp(tiny_hf, {"@llama_tasks": "spacy-llama.EntityReview.v1"})
    egs = entity_examples(nlp)
    nlp.initialize(lambda: egs)
    assert nlp.get_pipe("llama").update(egs[2:])["llama"] == 0.0
