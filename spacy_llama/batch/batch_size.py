"""How many documents a corpus run hands the pipeline at a time (and writes durably at a
time), read from the pipeline's config."""

from __future__ import annotations

from typing import Optional

from confection import Config
from spacy.language import DEFAULT_CONFIG as SPACY_DEFAULTS

from ..pipeline import DEFAULT_CONFIG as LLAMA_DEFAULTS


def run_batch_size(config: Config, requested: Optional[int] = None) -> int:
    """Docs per batch (and per durable write) unless ``--batch-size`` says otherwise: the
    smallest of ``[nlp] batch_size`` and the llama components' micro-batches, so progress
    shows and a kill loses little while the model still sees full batches. Missing
    settings take spaCy's and the llama factory's defaults, so a filled and an unfilled
    config of one pipeline give the same size (local and Ray runs agree)."""
    if requested:
        return int(requested)
    nlp_cfg = config.get("nlp", {})
    sizes = [int(nlp_cfg.get("batch_size") or SPACY_DEFAULTS["nlp"]["batch_size"])]
    for comp in config.get("components", {}).values():
        if isinstance(comp, dict) and comp.get("factory") == "llama":
            sizes.append(int(comp.get("batch_size") or LLAMA_DEFAULTS["batch_size"]))
    return min(sizes)
