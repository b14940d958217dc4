"""The per-row loss the batched one (spacy_llama/training/losses.py) must equal: one plain
transformers forward per candidate row (prompt + candidate) and per answer row, full logits.
It is the implementation the losses had before they were batched, except for calibration:
the prior is the mean over all the task's content-free probes, as TextCat.v2's ``assign``
does (the old code took only the first ``per`` requests as probes, so with TextCat.v2's
three content-free texts it scored documents against the wrong requests)."""

from __future__ import annotations

from typing import Any, List, Sequence

import torch
import torch.nn.functional as F
from spacy.training import Example

from spacy_llama.generation.scoring import Scorer
from spacy_llama.tasks.base import ScoresLabels
from spacy_llama.training.gold import usable


def reference_loss(task: Any, lm: Any, module: Any, examples: Sequence[Example]) -> torch.Tensor:
    egs = [eg for eg in examples if usable(eg)]
    if isinstance(task, ScoresLabels):
        return _textcat(task, lm, module, egs)
    return _answer(task, lm, module, egs)


def _textcat(task: Any, lm: Any, module: Any, egs: List[Example]) -> torch.Tensor:
    requests = list(task.requests([eg.predicted for eg in egs]))
    per = 1 if task.exclusive else len(task.labels)
    n_probes = len(requests) - per * len(egs)
    values = [_candidates(task, lm, module, r) for r in requests]
    priors = [None] * per
    if n_probes:
        priors = [torch.stack(values[q:n_probes:per]).mean(0) for q in range(per)]
    total = torch.zeros(())
    for k, eg in enumerate(egs):
        for q, gold in enumerate(task.gold_candidates(eg.reference)):
            mine = values[n_probes + k * per + q]
            if priors[q] is not None:
                mine = mine - priors[q]
            total = total + F.cross_entropy(mine[None, :], torch.tensor([gold]))
    return total


def _candidates(task: Any, lm: Any, module: Any, req: Any) -> torch.Tensor:
    prepared = Scorer(lm, batch_size=1).prepare(0, req)
    out = []
    for cont, first in zip(prepared.conts, prepared.first):
        row = prepared.prefix + cont
        logp = _token_logprobs(module, row)
        mine = logp[len(prepared.prefix) + first - 1 : len(row) - 1]
        out.append(mine.mean() if task.length_normalize else mine.sum())
    return torch.stack(out)


def _answer(task: Any, lm: Any, module: Any, egs: List[Example]) -> torch.Tensor:
    total = torch.zeros(())
    for eg, req in zip(egs, task.requests([eg.predicted for eg in egs])):
        prompt = lm.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        answer = lm.encode(task.gold_answer(eg.reference), add_special_tokens=False)
        row = prompt + (answer + lm.stop_token_ids[:1])[: max(1, lm.context_length - len(prompt))]
        total = total - _token_logprobs(module, row)[len(prompt) - 1 : len(row) - 1].mean()
    return total


def _token_logprobs(module: Any, row: List[int]) -> torch.Tensor:
    ids = torch.tensor([row])
    logits = module(input_ids=ids).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
