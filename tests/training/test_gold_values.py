"""Training gold is validated (issue 21, item 8): ``doc.cats`` with NaN, values outside
[0, 1] or labels the task does not have used to train silently; each is a coded error
naming the example, in ``initialize`` and in every ``update``."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from spacy.training import Example
from thinc.api import SGD

from spacy_llama.errors import TrainingError

from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp


def examples_with(nlp: Any, cats: Dict[str, Any]) -> list:
    egs = cat_examples(nlp)
    bad = Example(nlp.make_doc(TEXTS[1]), nlp.make_doc(TEXTS[1]))
    bad.reference.cats = cats
    return [egs[0], bad, *egs[2:]]


CASES = [
    ({"pos": float("nan"), "neg": 1.0}, "E615"),
    ({"pos": 7.0, "neg": 0.0}, "E615"),
    ({"pos": -0.5, "neg": 1.0}, "E615"),
    ({"pos": 1.0, "neg": 0.0, "sport": 1.0}, "E616"),
]


@pytest.mark.parametrize("cats, code", CASES)
def test_bad_gold_cats_are_refused_in_initialize(tiny_hf, cats, code) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    with pytest.raises(TrainingError, match=rf"\[{code}\].*training example 1"):
        nlp.initialize(lambda: examples_with(nlp, cats))


@pytest.mark.parametrize("cats, code", CASES)
def test_bad_gold_cats_are_refused_in_update(tiny_hf, cats, code) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    nlp.initialize(lambda: cat_examples(nlp))
    with pytest.raises(TrainingError, match=rf"\[{code}\]"):
        nlp.update(examples_with(nlp, cats), sgd=SGD(0.1))


def test_good_gold_still_trains(tiny_hf) -> None:
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    nlp.initialize(lambda: cat_examples(nlp))
    losses = nlp.update(cat_examples(nlp), sgd=SGD(0.1))
    assert losses["llama"] > 0
