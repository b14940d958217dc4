"""The training objective of EntityReview (``ReviewsEntities``), the quantity the task
predicts with: for each gold entity span of the reference doc, cross-entropy of its gold
label under the softmax of the candidate labels' log-likelihoods, from the very
ScoreRequest the task builds at inference (same prompt, context and truncation, summed or
mean as ``length_normalize``, calibration prior subtracted as ``assign`` does).

Generative NER (``GeneratesEntities``) trains through ``losses.answer_loss`` on the task's
own rendering of the gold entities (``gold_answer``), as Completion and Summary do on theirs.
This module reuses ``losses.candidate_scores``, so the scoring stays the engine's.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from spacy.training import Example

from ..models.base import LoadedModel
from ..tasks.base import ReviewsEntities
from ..tasks.layout import asked, match
from .losses import candidate_scores


def review_loss(
    task: ReviewsEntities,
    lm: LoadedModel,
    module: Any,
    egs: Sequence[Example],
    *,
    batch_size: Optional[int] = None,
    share_prompt: bool = True,
) -> Optional[torch.Tensor]:
    """Summed over the gold entities of ``egs``; None when none has a target (a constant
    has no gradient to backpropagate). One request is scored at a time (``batch_size`` and
    ``share_prompt`` are the batched losses' settings; they change nothing here)."""
    names = [x.name for x in task.labels]
    total: Optional[torch.Tensor] = None
    for eg in egs:
        doc, targets = task.review_targets(eg)
        if not targets:
            continue
        requests = list(task.requests([doc]))
        got = match([asked(r) for r in requests], requests, 1, task=type(task).__name__)
        probes = got.probes_of(0)
        prior = candidate_scores(task, lm, module, probes[0]) if probes else None
        for req, gold in zip(got.docs[0], targets):
            values = candidate_scores(task, lm, module, req)
            if prior is not None:
                values = values - prior
            target = torch.tensor([names.index(gold)], device=values.device)
            loss = F.cross_entropy(values[None, :], target)
            total = loss if total is None else total + loss
    return total
