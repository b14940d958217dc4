"""Checking an answer once, where it enters the engine (a model's, a server's, or the
response cache's replay of either), so nothing downstream has to trust it:

* text: valid Unicode. A lone surrogate (a server's JSON can hold ``"\\ud800"``) would stop
  every UTF-8 output when its batch is written, and a resume would replay it from the cache
  and stop again; it becomes U+FFFD, counted.
* log-probabilities: finite numbers. NaN or infinity would be written as bare ``NaN`` /
  ``-Infinity``, which is not JSON; it becomes None (JSON null), counted.
* counts: no more generated tokens or log-probabilities than ``max_new_tokens``, and as
  many log-probabilities as token ids when both are given; an answer longer than
  ``max_new_tokens`` tokens can be is refused. A refused answer fails its document with
  the reason (the size of a server's body is bounded before it is read, in
  ``models/server/transport.py``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import List, Optional, Tuple

from ..errors import Errors
from ..types import GenerationResult

_SURROGATE = re.compile("[\ud800-\udfff]")
# The longest text one token may decode to, generously (the longest pieces of LLaMA-family
# vocabularies are runs of spaces or dashes well below this).
MAX_CHARS_PER_TOKEN = 256


def check_answer(
    res: GenerationResult, *, max_new_tokens: int
) -> Tuple[GenerationResult, int, Optional[str]]:
    """(the answer as it may be used, how many values were repaired, why it is refused or
    None). The answer is a copy when anything changed; an echoed prompt is added later."""
    if res.error is not None:
        return res, 0, None
    problem = _count_problem(res, max_new_tokens)
    if problem is not None:
        return res, 0, problem
    text, fixed_text = _SURROGATE.subn("\ufffd", res.text)
    logprobs: List[Optional[float]] = []
    fixed_numbers = unscored = 0
    for value in res.logprobs:
        if value is not None and not math.isfinite(value):
            logprobs.append(None)
            # the closing tokens of a closed answer are NaN by design (no model pass scored
            # them): null, but not a repair
            if res.closed and math.isnan(value):
                unscored += 1
            else:
                fixed_numbers += 1
        else:
            logprobs.append(value)
    repaired = fixed_text + fixed_numbers
    if not repaired and not unscored:
        return res, 0, None
    return dataclasses.replace(res, text=text, logprobs=logprobs), repaired, None  # type: ignore[arg-type]


def _count_problem(res: GenerationResult, max_new_tokens: int) -> Optional[str]:
    n_ids, n_lp = len(res.token_ids), len(res.logprobs)
    if n_ids > max_new_tokens:
        return Errors.E611.format(got=n_ids, what="tokens", max_new=max_new_tokens, detail="")
    if n_lp > max_new_tokens:
        return Errors.E611.format(
            got=n_lp, what="log-probabilities", max_new=max_new_tokens, detail=""
        )
    if n_ids and n_lp and n_ids != n_lp:
        detail = f" and {n_ids} token ids"
        return Errors.E611.format(
            got=n_lp, what="log-probabilities", max_new=max_new_tokens, detail=detail
        )
    limit = MAX_CHARS_PER_TOKEN * max(1, max_new_tokens)
    if len(res.text) > limit:
        return Errors.E611.format(
            got=len(res.text),
            what="characters",
            max_new=max_new_tokens,
            detail=f" (at most {limit}: {MAX_CHARS_PER_TOKEN} per token)",
        )
    return None
