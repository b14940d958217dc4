"""Fitting a prompt into the model's context: the document is cut, never the
instruction. Tokens are counted with the model's own tokenizer (through the formatter),
never by counting words."""

from __future__ import annotations

import warnings
from typing import Callable, List, Literal, Sequence, TypeVar

from spacy.tokens import Doc

from ..errors import Errors, PromptTooLongError
from ..types import GenerationRequest
from .base import PromptFormatter, doc_label
from .layout import Asked, ask
from .prompt import DocLike

Overflow = Literal["truncate", "error"]
T = TypeVar("T")


def token_count(formatter: PromptFormatter, text: str) -> int:
    """Tokens of a bare string (a candidate answer), counted with the model's tokenizer."""
    return formatter.count(GenerationRequest(prompt=text, add_special_tokens=False))


def fit_doc(
    doc: DocLike,
    build: Callable[[DocLike], T],
    fits: Callable[[T], bool],
    *,
    on_overflow: Overflow,
    label: str,
) -> T:
    """``build(doc)`` if it fits, else ``build`` of the longest prefix of ``doc`` that does."""
    full = build(doc)
    if fits(full):
        return full
    if on_overflow == "error":
        raise PromptTooLongError(Errors.E316.format(label=label))
    lo, hi, best = 0, len(doc) - 1, None
    while lo <= hi:  # the largest k with doc[:k] fitting
        mid = (lo + hi) // 2
        cand = build(doc[:mid])
        if fits(cand):
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise PromptTooLongError(Errors.E317.format(label=label))
    warnings.warn(
        f"[spacy-llama] The prompt for {label} did not fit the model's context; the document "
        f"was truncated to its first {lo - 1} of {len(doc)} tokens.",
        stacklevel=3,
    )
    return best


def generation_requests(
    docs: Sequence[Doc],
    build: Callable[..., GenerationRequest],
    formatter: PromptFormatter,
    *,
    on_overflow: str,
) -> List[GenerationRequest]:
    """One request per doc (stamped with its doc's index); empty docs get an empty prompt
    (no model call), long ones are cut to fit the context (see :func:`fit_doc`)."""
    out = []
    for k, doc in enumerate(docs):
        name = doc_label(doc)
        if not doc.text.strip():
            out.append(ask(GenerationRequest(prompt="", label=name), Asked(k)))
            continue
        req = fit_doc(
            doc,
            build,
            lambda r: formatter.count(r) <= formatter.budget,
            on_overflow=on_overflow,  # type: ignore[arg-type]
            label=name,
        )
        req.label = name
        out.append(ask(req, Asked(k)))
    return out
