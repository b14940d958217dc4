"""The training objective of each task: the quantity the task predicts with, made
differentiable (teacher-forced forwards of the peft model, with autograd).

- TextCat, exclusive: cross-entropy of the gold label under the softmax of the labels'
  log-likelihoods (summed or mean, as the task's ``length_normalize``), scored exactly as the
  engine scores candidates (the same tokenization of prompt + candidate; with calibration the
  mean over the content-free probes is subtracted, as the task's ``assign`` does).
- TextCat, multi-label: for each label, the yes/no question the task asks; binary
  cross-entropy of the gold answer, i.e. cross-entropy over the candidates (yes, no).
- Completion and Summary: next-token loss on the reference answer (``doc._.<attr>``) after
  the task's prompt, answer tokens only (the prompt is masked), ending with the stop token.

Speed, as inference does it (forward.py): the token prefix every request of the batch shares
(instruction, few-shot block) runs once; each request's prompt runs once and its KV cache is
expanded over its candidates, which run as short continuations; rows are right padded into
micro-batches of at most ``batch_size`` rows. The values equal one plain forward per
candidate row (tests/training/reference.py keeps that implementation to compare against).

Tasks are read through their capabilities (tasks/base.py's ``ScoresLabels``,
``GeneratesAnswer``, ``GeneratesEntities``): the gold target is the task's own
(``gold_candidates``, ``gold_answer``), and each request says which doc and question it
asks (tasks/layout.py), so the losses never rebuild the tasks' request layout. The tasks
themselves never touch torch; ``capabilities.py`` says which loss trains which task.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from spacy.training import Example

from ..generation.rows import group_by_sum as chunks
from ..generation.rows import shared_prefix as shared_length
from ..generation.scoring import Scorer
from ..models.base import LoadedModel
from ..tasks.base import GeneratesAnswer, GeneratesEntities, ReviewsEntities, ScoresLabels
from ..tasks.layout import asked, match
from ..types import GenerationRequest, ScoreRequest
from .forward import Past, logprobs_at, run

# The tasks whose requests score candidates, and those that learn to write an answer.
ScoringTask = Union[ScoresLabels, ReviewsEntities]
AnswerTask = Union[GeneratesAnswer, GeneratesEntities]


# -- ScoresLabels (TextCat) ----------------------------------------------------------------
def textcat_loss(
    task: ScoresLabels,
    lm: LoadedModel,
    module: Any,
    egs: Sequence[Example],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
) -> torch.Tensor:
    """Summed over docs and questions: the cross-entropy of each question's gold candidate
    under the softmax of its candidates' values, less ``prior_weight`` times the mean of
    the calibration probes of that question, as the task's ``assign`` does."""
    requests: List[ScoreRequest] = list(task.requests([eg.predicted for eg in egs]))
    values = candidate_values(
        task, lm, module, requests, batch_size=batch_size, share_prompt=share_prompt
    )
    got = match([asked(r) for r in requests], values, len(egs), task=type(task).__name__)
    priors = {q: torch.stack(probes).mean(dim=0) for q, probes in got.probes.items()}
    total = torch.zeros((), device=lm.device)
    for eg, mine in zip(egs, got.docs):
        for q, (value, gold) in enumerate(zip(mine, task.gold_candidates(eg.reference))):
            if q in priors:  # as assign: TextCat.v3 subtracts a share of the probes' mean
                value = value - task.prior_weight * priors[q]
            target = torch.tensor([gold], device=value.device)
            total = total + F.cross_entropy(value[None, :], target)
    return total


def candidate_scores(
    task: ScoringTask, lm: LoadedModel, module: Any, req: ScoreRequest
) -> torch.Tensor:
    """Summed (or mean) log-probability of each candidate of one request, with gradients."""
    return candidate_values(task, lm, module, [req])[0]


def candidate_values(
    task: ScoringTask,
    lm: LoadedModel,
    module: Any,
    requests: Sequence[ScoreRequest],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
) -> List[torch.Tensor]:
    """Per request, the summed (or mean) log-probability of each candidate."""
    scorer = Scorer(lm, batch_size=1)
    prepared = [scorer.prepare(i, r) for i, r in enumerate(requests)]  # the engine's tokens
    shared = shared_length([p.prefix for p in prepared]) if share_prompt else 0
    base = run(module, [prepared[0].prefix[:shared]], None)[1] if shared else None
    out: List[torch.Tensor] = []
    for chunk in chunks([len(p.conts) for p in prepared], batch_size):
        past = base.select([0] * len(chunk)) if base is not None else None
        items = [prepared[i] for i in chunk]
        hidden, past = run(module, [p.prefix[shared:] for p in items], past)
        assert past is not None
        out += _chunk_values(task, module, items, hidden, past, shared)
    return out


def _chunk_values(
    task: ScoringTask,
    module: Any,
    items: Sequence[Any],
    hidden: torch.Tensor,
    past: Past,
    shared: int,
) -> List[torch.Tensor]:
    """The candidates of ``items`` as continuations of their prompts' cache: the prompt's last
    position predicts each candidate's first token, the continuation the rest."""
    owner = [b for b, it in enumerate(items) for _ in it.conts]
    conts = [c for it in items for c in it.conts]
    firsts = [f for it in items for f in it.first]
    # Only continuations of two tokens or more run, without their last token (nothing is
    # predicted after it): a one-token label is scored from its prompt's last position alone.
    longer = [j for j, c in enumerate(conts) if len(c) > 1]
    heads, tails = [], []  # (row, position, token) of the first / later tokens
    for j, (cont, first) in enumerate(zip(conts, firsts)):
        if first == 0:
            heads.append((owner[j], len(items[owner[j]].prefix) - shared - 1, cont[0]))
    for row, j in enumerate(longer):
        tails += [(row, t - 1, conts[j][t]) for t in range(max(firsts[j], 1), len(conts[j]))]
    head_lp = logprobs_at(module, hidden, heads)
    tail_lp = head_lp[:0]
    if longer:
        rows = [conts[j][:-1] for j in longer]
        cont_hidden, _ = run(module, rows, past.select([owner[j] for j in longer]), keep=False)
        tail_lp = logprobs_at(module, cont_hidden, tails)
    values, h, t = [], 0, 0
    for cont, first in zip(conts, firsts):
        n_tail = len(cont) - max(first, 1)
        mine = torch.cat([head_lp[h : h + int(first == 0)], tail_lp[t : t + n_tail]])
        h, t = h + int(first == 0), t + n_tail
        values.append(mine.mean() if task.length_normalize else mine.sum())
    out, k = [], 0
    for it in items:
        out.append(torch.stack(values[k : k + len(it.conts)]))
        k += len(it.conts)
    return out


# -- GeneratesAnswer (Completion, Summary), GeneratesEntities (NER) ------------------------
def answer_loss(
    task: AnswerTask,
    lm: LoadedModel,
    module: Any,
    egs: Sequence[Example],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
) -> torch.Tensor:
    """Summed over docs: the mean NLL of each doc's gold answer (the task's
    ``gold_answer``: ``doc._.<attr>`` for Completion and Summary, the rendering of the gold
    entities for NER) after its prompt."""
    requests: List[GenerationRequest] = list(task.requests([eg.predicted for eg in egs]))
    answers = [task.gold_answer(eg.reference) for eg in egs]
    return answers_nll(
        lm, module, requests, answers, batch_size=batch_size, share_prompt=share_prompt
    )


def answers_nll(
    lm: LoadedModel,
    module: Any,
    requests: Sequence[GenerationRequest],
    answers: Sequence[str],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
) -> torch.Tensor:
    """Summed over requests: the mean NLL of each answer's tokens (then the stop token)
    after its request's prompt, teacher-forced; the prompt is masked. Every task that
    learns to write an answer (Completion, Summary, NER) trains through here."""
    prompts, rows = answer_rows(lm, requests, answers)
    shared = shared_length(prompts) if share_prompt else 0
    base = run(module, [prompts[0][:shared]], None)[1] if shared else None
    total = torch.zeros((), device=lm.device)
    for chunk in chunks([1] * len(rows), batch_size):
        past = base.select([0] * len(chunk)) if base is not None else None
        # the last token predicts nothing: it is not run
        hidden, _ = run(module, [rows[i][shared:-1] for i in chunk], past, keep=False)
        picks, sizes = [], []
        for j, i in enumerate(chunk):
            row, begin = rows[i], len(prompts[i]) - shared  # answer from row[begin + shared]
            picks += [(j, t - 1, row[t + shared]) for t in range(begin, len(row) - shared)]
            sizes.append(len(row) - len(prompts[i]))
        for part in torch.split(logprobs_at(module, hidden, picks), sizes):
            total = total - part.mean()
    return total


def answer_rows(
    lm: LoadedModel, requests: Sequence[GenerationRequest], answers: Sequence[str]
) -> Tuple[List[List[int]], List[List[int]]]:
    """Per request, the prompt's tokens and prompt + answer + stop token (cut to the
    context)."""
    stop = lm.stop_token_ids[:1]
    prompts, rows = [], []
    for req, text in zip(requests, answers):
        # Tokenized apart, as the engine does: it encodes the prompt, then generates.
        prompt = lm.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        answer = lm.encode(text, add_special_tokens=False) + stop
        answer = answer[: max(1, lm.context_length - len(prompt))]
        prompts.append(prompt)
        rows.append(prompt + answer)
    return prompts, rows
