"""The training objective of the entity tasks, each the quantity the task predicts with:

- EntityReview: for each gold entity span of the reference doc, cross-entropy of its gold
  label under the softmax of the candidate labels' log-likelihoods, from the very
  ScoreRequest the task builds at inference (same prompt, context and truncation, summed or
  mean as ``length_normalize``, calibration prior subtracted as ``assign`` does).
- NER (generative): teacher-forced next-token loss on the task's own rendering of the gold
  entities (``NERTask.render``: the "TYPE: text" lines its parser reads, or "none"), after
  the task's prompt; answer tokens only (the prompt is masked), ending with the stop token.

The pipe calls :func:`entity_task_loss` for these tasks (``losses.task_loss`` for the
others); it reuses ``losses.candidate_scores``, so the scoring stays the engine's, and
``losses.answers_nll``, the batched teacher-forced pass of the generative tasks.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from spacy.training import Example

from ..models.base import LoadedModel
from ..types import GenerationRequest
from .entity_gold import is_entity_review, ner_gold, review_targets
from .gold import usable
from .losses import answers_nll, candidate_scores


def entity_task_loss(
    task: Any,
    lm: LoadedModel,
    module: Any,
    examples: Iterable[Example],
    *,
    batch_size: Optional[int] = None,
) -> Tuple[Optional[torch.Tensor], int]:
    """The summed loss of the usable examples (empty docs skipped) and how many there were;
    ``batch_size``: rows per forward of the NER loss (None: all at once)."""
    egs = [eg for eg in examples if usable(eg)]
    if not egs:
        return None, 0
    if is_entity_review(task):
        return review_loss(task, lm, module, egs), len(egs)
    return ner_loss(task, lm, module, egs, batch_size=batch_size), len(egs)


# -- EntityReview ------------------------------------------------------------------------
def review_loss(
    task: Any, lm: LoadedModel, module: Any, egs: Sequence[Example]
) -> Optional[torch.Tensor]:
    """Summed over the gold entities of ``egs``; None when none has a target (a constant
    has no gradient to backpropagate)."""
    names = [x.name for x in task.labels]
    total: Optional[torch.Tensor] = None
    for eg in egs:
        doc, targets = review_targets(task, eg)
        if not targets:
            continue
        requests = list(task.requests([doc]))
        prior: Optional[torch.Tensor] = None
        if len(requests) > len(targets):  # the calibration probe comes first
            prior = candidate_scores(task, lm, module, requests[0])
            requests = requests[1:]
        for req, gold in zip(requests, targets):
            values = candidate_scores(task, lm, module, req)
            if prior is not None:
                values = values - prior
            target = torch.tensor([names.index(gold)], device=values.device)
            loss = F.cross_entropy(values[None, :], target)
            total = loss if total is None else total + loss
    return total


# -- NER -----------------------------------------------------------------------------------
def ner_loss(
    task: Any,
    lm: LoadedModel,
    module: Any,
    egs: Sequence[Example],
    *,
    batch_size: Optional[int] = None,
) -> torch.Tensor:
    """Teacher-forced on the task's rendering of each doc's gold entities, through the
    batched answer loss Completion and Summary use."""
    requests: List[GenerationRequest] = list(task.requests([eg.predicted for eg in egs]))
    answers = [ner_answer(task, eg) for eg in egs]
    return answers_nll(lm, module, requests, answers, batch_size=batch_size)


def ner_answer(task: Any, eg: Example) -> str:
    """What the model should write for ``eg``: the task's rendering of the gold entities,
    after a plain prompt starting as the task's answers do (NER.v1: a new line after
    "Entities:"; NER.v2: the JSON right away); a chat reply starts its own message."""
    text = task.render(ner_gold(task, eg))
    return text if task.chat else getattr(task, "plain_answer_prefix", "\n") + text
