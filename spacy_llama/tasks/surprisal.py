"""``spacy-llama.Surprisal.v1``/``.v2``/``.v3``: the log-probability of every spaCy token
under the model (v2: with a chosen context window and stride; v3: the text starts after a
start token even where the tokenizer adds no BOS, so its first word is scored too).

v1 and v2's ``add_bos = true`` adds the tokenizer's BOS only where the tokenizer adds one:
SmolLM2's adds nothing, so its first piece has no context and the first word's score is None
(or covers only its later pieces). v3's ``start = "auto"`` puts the document separator the
model was pretrained with (``<|endoftext|>`` for SmolLM2) before such a text instead.

The engine returns each model token's log-probability and character span (long documents are
scored in overlapping windows by the Scorer, so every piece keeps at least half a window of
context). Pieces are mapped to spaCy tokens through character offsets: a piece inside one
token adds to it; a piece spanning several tokens is shared out by the characters it covers in
each; a whitespace-only piece between tokens goes to the following token (it is the model
predicting a word boundary). Token sums land in ``token._.llama_logprob`` and the per-piece
perplexity in ``doc._.llama_perplexity``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc
from spacy.training import Example as SpacyExample

from ..errors import Errors, FewShotError
from ..registry import llama_tasks
from ..types import TokenLogprobRequest, TokenLogprobResult
from .base import PromptFormatter, doc_label
from .extensions import check_names, install_extensions
from .saved import write_task


class SurprisalTask:
    def __init__(
        self,
        *,
        add_bos: bool,
        logprob_attr: str,
        perplexity_attr: str,
        window: Optional[int] = None,
        stride: Optional[int] = None,
        start: Optional[str] = None,
    ) -> None:
        self.add_bos = add_bos
        self.start = start  # v3: "auto", "none" or a token; None: v1/v2's add_bos
        self._prefix: List[int] = []
        self.logprob_attr = logprob_attr
        self.perplexity_attr = perplexity_attr
        self.window = window
        self.stride = stride
        install_extensions(token=[logprob_attr], doc=[perplexity_attr])

    @property
    def extensions(self) -> List[str]:
        return [self.logprob_attr, self.perplexity_attr]

    @property
    def assigns(self) -> List[str]:
        return [f"token._.{self.logprob_attr}", f"doc._.{self.perplexity_attr}"]

    def initialize(self, formatter: PromptFormatter, *, sample: Doc) -> None:
        # no prompt: the document's own text is scored, after v3's start token
        if self.start is not None:
            self.add_bos, self._prefix = formatter.document_start(self.start)

    def requests(self, docs: Sequence[Doc]) -> List[TokenLogprobRequest]:
        return [
            TokenLogprobRequest(
                doc.text,
                add_special_tokens=self.add_bos,
                label=doc_label(doc),
                window=self.window,
                stride=self.stride,
                prefix_ids=list(self._prefix),
                doc_index=k,
            )
            for k, doc in enumerate(docs)
        ]

    def assign(self, docs: Sequence[Doc], results: Sequence[TokenLogprobResult]) -> None:
        for doc, res in zip(docs, results):
            for token, value in zip(doc, align_to_tokens(doc, res.offsets, res.logprobs)):
                token._.set(self.logprob_attr, value)
            scored = [lp for lp in res.logprobs if lp is not None]
            ppl = math.exp(-sum(scored) / len(scored)) if scored else None
            doc._.set(self.perplexity_attr, ppl)

    def score(self, examples: Iterable[SpacyExample], **kwargs: Any) -> Dict[str, Any]:
        """The mean per-document perplexity (no gold needed)."""
        values = [ex.predicted._.get(self.perplexity_attr) for ex in examples]
        values = [v for v in values if v is not None]
        return {"llama_perplexity": sum(values) / len(values) if values else None}

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        state: Dict[str, Any] = {"add_bos": self.add_bos, "window": self.window}
        state["stride"] = self.stride
        if self.start is not None:
            state.update(start=self.start, prefix_ids=self._prefix)
        write_task(path, state)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> SurprisalTask:
        return self


def align_to_tokens(
    doc: Doc, offsets: Sequence[Tuple[int, int]], logprobs: Sequence[Optional[float]]
) -> List[Optional[float]]:
    """Sum piece log-probabilities into spaCy tokens by character overlap (see module doc)."""
    starts = [t.idx for t in doc]
    ends = [t.idx + len(t.text) for t in doc]
    totals: List[Optional[float]] = [None] * len(doc)
    for (a, b), lp in zip(offsets, logprobs):
        if lp is None or b <= a or not len(doc):
            continue  # no context (first piece), or a zero-width special token
        first = bisect_right(ends, a)  # the first token ending after the piece starts
        shares: List[Tuple[int, int]] = []
        j = first
        while j < len(doc) and starts[j] < b:
            n = min(b, ends[j]) - max(a, starts[j])
            if n > 0:
                shares.append((j, n))
            j += 1
        if not shares:
            shares = [(min(first, len(doc) - 1), 1)]
        covered = sum(n for _, n in shares)
        for j, n in shares:
            totals[j] = (totals[j] or 0.0) + lp * n / covered
    return totals


@llama_tasks("spacy-llama.Surprisal.v1")
def surprisal_task_v1(
    *,
    add_bos: bool = True,
    logprob_attr: str = "llama_logprob",
    perplexity_attr: str = "llama_perplexity",
) -> SurprisalTask:
    """Per-token log-probabilities and document perplexity (no prompt, no generation)."""
    check_names(logprob_attr=logprob_attr, perplexity_attr=perplexity_attr)
    return SurprisalTask(
        add_bos=add_bos, logprob_attr=logprob_attr, perplexity_attr=perplexity_attr
    )


@llama_tasks("spacy-llama.Surprisal.v2")
def surprisal_task_v2(
    *,
    add_bos: bool = True,
    window: Optional[int] = None,
    stride: Optional[int] = None,
    logprob_attr: str = "llama_logprob",
    perplexity_attr: str = "llama_perplexity",
) -> SurprisalTask:
    """As v1, with the context fixed by config: each pass sees ``window`` tokens (default:
    the model's context length) and moves on by ``stride`` (default: half the window), so
    every token after the first window keeps at least ``window - stride`` tokens of context.
    A fixed window makes perplexities comparable across models and documents."""
    check_names(logprob_attr=logprob_attr, perplexity_attr=perplexity_attr)
    if window is not None and window < 2:
        raise FewShotError(Errors.E320.format(window=window))
    if stride is not None and (stride < 1 or (window is not None and stride >= window)):
        raise FewShotError(Errors.E321.format(stride=stride, window=window))
    return SurprisalTask(
        add_bos=add_bos,
        logprob_attr=logprob_attr,
        perplexity_attr=perplexity_attr,
        window=window,
        stride=stride,
    )


@llama_tasks("spacy-llama.Surprisal.v3")
def surprisal_task_v3(
    *,
    start: str = "auto",
    window: Optional[int] = None,
    stride: Optional[int] = None,
    logprob_attr: str = "llama_logprob",
    perplexity_attr: str = "llama_perplexity",
) -> SurprisalTask:
    """As v2, and every token is scored: the text starts after ``start``. ``"auto"``: the
    tokenizer's BOS where it adds one, else its document separator (``<|endoftext|>``,
    else its BOS or EOS token); ``"none"``: nothing (the first token gets no score, like
    v2 on a tokenizer without BOS); any other value names one token of the vocabulary."""
    task = surprisal_task_v2(
        window=window, stride=stride, logprob_attr=logprob_attr, perplexity_attr=perplexity_attr
    )
    task.start = start
    return task
