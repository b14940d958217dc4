"""A probability for each span a generative task writes (``span._.llama_score``).

A span's score is the model's own probability of the part of its answer that named the span:
``exp`` of the summed log-probabilities (``GenerationResult.logprobs``, the raw model's, before
any grammar mask) of the generated tokens that overlap the answer's characters for that span
(NER.v1: the ``TYPE: text`` line; NER.v2: the label and text values of the entity's JSON
object; Extract: the string value). Where a token's characters are comes from decoding the
answer's token prefixes with the model's tokenizer (the formatter's ``decode``). A result
without token ids (a server that returns none, or an empty doc) gives no score (None), never
a made-up one. Distillation's review queue reads these scores from the Doc.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

from spacy.tokens import Span

from ..types import GenerationResult
from .extensions import install_extensions

SCORE_ATTR = "llama_score"
Decode = Callable[[List[int]], str]
CharRange = Tuple[int, int]


def install_score() -> None:
    install_extensions(span=[SCORE_ATTR])


def decoder_of(formatter: Any) -> Optional[Decode]:
    """The tokenizer's decode, where the formatter offers one (test fakes may not)."""
    decode = getattr(formatter, "decode", None)
    return decode if callable(decode) else None


def token_ranges(decode: Decode, ids: Sequence[int]) -> List[CharRange]:
    """The characters of the decoded answer each token produced. A prefix that ends inside
    a multi-byte character decodes longer than it will be; each end is clamped to the ends
    after it, so the ranges stay ordered and cover the text."""
    ends = [len(decode(list(ids[: k + 1]))) for k in range(len(ids))]
    for k in range(len(ends) - 2, -1, -1):
        ends[k] = min(ends[k], ends[k + 1])
    starts = [0] + ends[:-1]
    return list(zip(starts, ends))


def range_probability(
    tokens: Sequence[CharRange],
    logprobs: Sequence[Optional[float]],
    ranges: Sequence[CharRange],
) -> Optional[float]:
    """``exp`` of the summed log-probabilities of the tokens overlapping any of ``ranges``;
    None when no token does, or when one of them was not chosen by the model (an answer
    closed at its budget has unscored closing tokens, None or NaN: the span was cut, and
    its confidence is unknown rather than that of the part the model wrote)."""
    picked = [
        lp
        for (a, b), lp in zip(tokens, logprobs)
        if any(a < end and start < b for start, end in ranges if end > start)
    ]
    if not picked or any(lp is None or math.isnan(lp) for lp in picked):
        return None
    return math.exp(sum(lp for lp in picked if lp is not None))


class AnswerConfidence:
    """The confidence of character ranges of one generated answer (the probability of the
    tokens that wrote them); the token ranges are decoded once, on the first request, so a
    task that writes no span pays nothing."""

    def __init__(self, decode: Optional[Decode], result: GenerationResult) -> None:
        self.decode = decode
        self.result = result
        self._tokens: Optional[List[CharRange]] = None

    def of(self, ranges: Sequence[CharRange]) -> Optional[float]:
        res = self.result
        if self.decode is None or not res.token_ids or len(res.logprobs) != len(res.token_ids):
            return None
        if self._tokens is None:
            self._tokens = token_ranges(self.decode, res.token_ids)
        return range_probability(self._tokens, res.logprobs, ranges)


def set_score(span: Span, value: Optional[float]) -> None:
    span._.set(SCORE_ATTR, value)


def json_value_ranges(
    text: str, values: Sequence[str], start: int = 0
) -> List[Optional[CharRange]]:
    """Where each string value is written (inside its quotes) in the JSON answer ``text``,
    in order: each is looked for after the previous one (as the spans follow the answer)."""
    out: List[Optional[CharRange]] = []
    cursor = start
    for value in values:
        for literal in (json.dumps(value, ensure_ascii=False), json.dumps(value)):
            at = text.find(literal, cursor)
            if at != -1:
                out.append((at + 1, at + len(literal) - 1))
                cursor = at + len(literal)
                break
        else:
            out.append(None)
    return out


def json_objects(text: str, key: str) -> List[Tuple[CharRange, Any]]:
    """The objects of the array under ``key`` in the JSON answer ``text``, each with the
    characters it was written in (read with ``raw_decode``, so braces inside strings are
    no trouble). Nothing when the answer is not such an object."""
    marker = text.find(json.dumps(key))
    if marker == -1:
        return []
    opening = text.find("[", marker)
    if opening == -1:
        return []
    decoder = json.JSONDecoder()
    out: List[Tuple[CharRange, Any]] = []
    at = opening + 1
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] != "{":
            break
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break
        out.append(((at, end), value))
        at = end
    return out


def score_copied_strings(
    spans: Sequence[Span], result: GenerationResult, decode: Optional[Decode]
) -> None:
    """Score spans whose text the model copied as JSON string values (Extract): each span's
    string is looked for in the answer after the previous use of the same string."""
    confidence = AnswerConfidence(decode, result)
    cursors: dict = {}
    for span in spans:
        found = json_value_ranges(result.text, [span.text], cursors.get(span.text, 0))[0]
        if found is not None:
            cursors[span.text] = found[1] + 1
        set_score(span, confidence.of([found]) if found is not None else None)
