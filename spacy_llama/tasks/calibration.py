"""How ``spacy-llama.TextCat.v2`` turns the Scorer's candidate log-likelihoods into label
scores: which part of each answer is scored, which aggregate of its token log-probs counts,
and the content-free baseline that is subtracted (PMI).

PMI (pointwise mutual information between the text and the answer):
``score(label) = log p(answer | prompt(text)) - mean_c log p(answer | prompt(c))`` over the
content-free texts ``c`` (e.g. "N/A"). Subtracting the answer's likelihood without the text
removes what a label gets for its surface form alone: a prior for the first listed label, a
rare word piece, or later words of a multi-word answer that follow from its first word.

TextCat.v3 subtracts a share of the baseline (``prior_weight``): a content-free prompt
overstates a label's bias. With SmolLM2 and the shipped labels, "N/A", "" and "[MASK]" give
``business`` a prior 5.4 nats above the others, more than any gold business doc raises it,
so full PMI never predicts business (0/11 on the gold test half). The weight 0.6 was chosen
on the gold train + dev halves only (benchmarks/calibration.py, benchmarks/CALIBRATION.md).
"""

from __future__ import annotations

import re
from typing import List, Literal, Optional, Sequence, Union

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..errors import Errors, FewShotError

# "sum": the answer's summed token log-probs; "mean": their mean (TextCat.v1's
# length_normalize); "first_word": the summed log-probs of the answer's first word only.
LabelScore = Literal["sum", "mean", "first_word"]
LABEL_SCORES = ("sum", "mean", "first_word")
_WORD = re.compile(r"\S+")


def check_label_score(label_score: str) -> LabelScore:
    if label_score not in LABEL_SCORES:
        raise FewShotError(Errors.E330.format(value=label_score, allowed=list(LABEL_SCORES)))
    return label_score  # type: ignore[return-value]


def content_free_texts(content_free: Union[str, Sequence[str]], calibrate: bool) -> List[str]:
    """The content-free texts as a list (one string is a list of one)."""
    texts = [content_free] if isinstance(content_free, str) else list(content_free)
    if calibrate and not texts:
        raise FewShotError(Errors.E331)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise FewShotError(Errors.E332.format(bad=bad))
    return texts


def probe_doc(vocab: Vocab, text: str) -> Doc:
    """A doc of ``text`` (may be empty) standing in for the document in a content-free prompt."""
    words = text.split()
    return Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False] if words else [])


def scored_parts(answers: Sequence[str], label_score: LabelScore) -> List[str]:
    """The part of each answer that is scored. For ``first_word``: the first word, or, where
    answers share it, as many leading words as tell them apart (the whole answer at most)."""
    if label_score != "first_word":
        return list(answers)
    ends = [[m.end() for m in _WORD.finditer(a)] or [len(a)] for a in answers]
    out = []
    for i, answer in enumerate(answers):
        others = [a for j, a in enumerate(answers) if j != i]
        for end in ends[i]:
            part = answer[:end]
            if not any(_starts_with_words(o, part) for o in others):
                break
        else:
            part = answer
        out.append(part)
    return out


def _starts_with_words(answer: str, part: str) -> bool:
    """Whether ``part`` is a whole-word prefix of ``answer``."""
    return answer.startswith(part) and (len(answer) == len(part) or answer[len(part)].isspace())


def pmi(
    values: Sequence[float], prior: Optional[Sequence[float]], weight: float = 1.0
) -> List[float]:
    """``values`` minus ``weight`` times the content-free baseline (unchanged without one).
    ``weight = 1`` is PMI; a smaller weight keeps part of the answer's own prior (see
    TextCat.v3: the content-free prompts overstate a label's bias)."""
    if prior is None:
        return list(values)
    return [v - weight * b for v, b in zip(values, prior)]


def check_prior_weight(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise FewShotError(Errors.E831.format(value=value))
    return float(value)
