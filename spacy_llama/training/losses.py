"""The training objective of each task: the quantity the task predicts with, made
differentiable (a plain teacher-forced forward of the peft model, with autograd).

- TextCat, exclusive: cross-entropy of the gold label under the softmax of the labels'
  log-likelihoods (summed or mean, as the task's ``length_normalize``), scored exactly as the
  engine scores candidates (the same tokenization of prompt + candidate, calibration included).
- TextCat, multi-label: for each label, the yes/no question the task asks; binary
  cross-entropy of the gold answer, i.e. cross-entropy over the candidates (yes, no).
- Completion and Summary: next-token loss on the reference answer (``doc._.<attr>``) after
  the task's prompt, answer tokens only (the prompt is masked), ending with the stop token.

Tasks are read through their public attributes (duck typing, so a TextCat.v2 with the same
attributes trains too); the tasks themselves never touch torch.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from spacy.tokens import Doc
from spacy.training import Example

from ..generation.scoring import Scorer
from ..models.base import LlamaModel
from ..types import GenerationRequest, ScoreRequest
from .gold import answer_attr, is_textcat, usable


def task_loss(
    task: Any, lm: LlamaModel, module: Any, examples: Iterable[Example]
) -> Tuple[Optional[torch.Tensor], int]:
    """The summed loss of the usable examples (empty docs skipped) and how many there were."""
    egs = [eg for eg in examples if usable(eg)]
    if not egs:
        return None, 0
    if is_textcat(task):
        return textcat_loss(task, lm, module, egs), len(egs)
    return answer_loss(task, lm, module, egs), len(egs)


# -- TextCat -----------------------------------------------------------------------------
def textcat_loss(task: Any, lm: LlamaModel, module: Any, egs: Sequence[Example]) -> torch.Tensor:
    docs = [eg.predicted for eg in egs]
    requests: List[ScoreRequest] = list(task.requests(docs))
    per = 1 if task.exclusive else len(task.labels)
    priors: List[Optional[torch.Tensor]] = [None] * per
    if getattr(task, "calibrate", False):
        priors = [candidate_scores(task, lm, module, r) for r in requests[:per]]
        requests = requests[per:]
    total = torch.zeros((), device=lm.device)
    for k, eg in enumerate(egs):
        for q, gold in enumerate(gold_indices(task, eg.reference)):
            values = candidate_scores(task, lm, module, requests[k * per + q])
            prior = priors[q]
            if prior is not None:
                values = values - prior
            target = torch.tensor([gold], device=values.device)
            total = total + F.cross_entropy(values[None, :], target)
    return total


def gold_indices(task: Any, ref: Doc) -> List[int]:
    """Per question of the doc, the index of the gold candidate."""
    if task.exclusive:
        names = [x.name for x in task.labels]
        best = max(names, key=lambda n: ref.cats.get(n, 0.0))
        return [names.index(best)]
    return [0 if ref.cats.get(x.name, 0.0) >= 0.5 else 1 for x in task.labels]  # (yes, no)


def candidate_scores(task: Any, lm: LlamaModel, module: Any, req: ScoreRequest) -> torch.Tensor:
    """Summed (or mean) log-probability of each candidate, with gradients."""
    prepared = Scorer(lm, batch_size=1)._prepare(0, req)  # the engine's own tokenization
    rows = [prepared.prefix + cont for cont in prepared.conts]
    starts = [len(prepared.prefix) + first for first in prepared.first]
    logp = _token_logprobs(module, rows, lm.pad_token_id)
    out = []
    for j, (row, start) in enumerate(zip(rows, starts)):
        mine = logp[j, start - 1 : len(row) - 1]  # log p(row[t] | row[:t]) for t >= start
        out.append(mine.mean() if task.length_normalize else mine.sum())
    return torch.stack(out)


# -- Completion / Summary ------------------------------------------------------------------
def answer_loss(task: Any, lm: LlamaModel, module: Any, egs: Sequence[Example]) -> torch.Tensor:
    attr = str(answer_attr(task))
    requests: List[GenerationRequest] = list(task.requests([eg.predicted for eg in egs]))
    total = torch.zeros((), device=lm.device)
    stop = lm.stop_token_ids[:1]
    for eg, req in zip(egs, requests):
        # Tokenized apart, as the engine does: it encodes the prompt, then generates.
        prompt = lm.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        answer = lm.encode(str(eg.reference._.get(attr)), add_special_tokens=False) + stop
        answer = answer[: max(1, lm.context_length - len(prompt))]
        row = prompt + answer
        logp = _token_logprobs(module, [row], lm.pad_token_id)
        total = total - logp[0, len(prompt) - 1 : len(row) - 1].mean()
    return total


def _token_logprobs(module: Any, rows: List[List[int]], pad: int) -> torch.Tensor:
    """(n, T-1): log p(token t+1 | tokens <= t) of right-padded rows, in float32."""
    width = max(len(r) for r in rows)
    device = next(module.parameters()).device
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(row, device=device)
        mask[j, : len(row)] = 1
    logits = module(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
