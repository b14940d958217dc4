"""Tiny trainable pipelines and gold examples shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import spacy
from spacy.language import Language
from spacy.training import Example

TEXTS = [
    "London is a big city in the United Kingdom.",
    "The quick brown fox jumps over the lazy dog.",
    "Apple is looking at buying a U.K. startup.",
    "Autonomous cars shift insurance liability.",
]
LABELS = ["pos", "neg"]


def adapter_block(**settings: Any) -> Dict[str, Any]:
    return {"@llama_adapters": "spacy-llama.LoRA.v1", "r": 4, "alpha": 8, **settings}


def textcat_config(path: Path, *, adapter: Optional[Dict[str, Any]] = None, **task: Any) -> Dict:
    cfg: Dict[str, Any] = {
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
        "task": {"@llama_tasks": "spacy-llama.TextCat.v1", "labels": LABELS, "chat": False, **task},
        "generation": {"max_new_tokens": 1},
    }
    if adapter is not None:
        cfg["adapter"] = adapter
    return cfg


def textcat_nlp(path: Path, *, adapter: Optional[Dict[str, Any]] = None, **task: Any) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=textcat_config(path, adapter=adapter, **task))
    return nlp


def generation_nlp(path: Path, task: Dict[str, Any], **adapter: Any) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
            "task": {"chat": False, **task},
            "generation": {"max_new_tokens": 6},
            "adapter": adapter_block(**adapter),
        },
    )
    return nlp


def cat_examples(nlp: Language, texts: List[str] = TEXTS) -> List[Example]:
    """Alternating gold labels: pos, neg, pos, ..."""
    out = []
    for i, text in enumerate(texts):
        eg = Example(nlp.make_doc(text), nlp.make_doc(text))
        eg.reference.cats = {"pos": float(i % 2 == 0), "neg": float(i % 2 == 1)}
        out.append(eg)
    return out


def answer_examples(nlp: Language, attr: str, answers: List[str]) -> List[Example]:
    out = []
    for text, answer in zip(TEXTS, answers):
        eg = Example(nlp.make_doc(text), nlp.make_doc(text))
        eg.reference._.set(attr, answer)
        out.append(eg)
    return out


# -- entity tasks (EntityReview, NER) ----------------------------------------------------
ENT_LABELS = ["COMPANY", "CITY"]
ENT_GOLD = [
    ("London is a big city in the United Kingdom.", [("London", "CITY")]),
    ("Apple is looking at buying a U.K. startup.", [("Apple", "COMPANY"), ("U.K.", "CITY")]),
    ("The quick brown fox jumps over the lazy dog.", []),
]


def entity_nlp(
    path: Path, task: Dict[str, Any], *, adapter: bool = True, max_new_tokens: int = 8
) -> Language:
    """A tiny EntityReview / NER pipeline; ``task`` gives at least "@llama_tasks"."""
    cfg: Dict[str, Any] = {
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
        "task": {"labels": ENT_LABELS, "chat": False, **task},
        "generation": {"max_new_tokens": max_new_tokens},
    }
    if adapter:
        cfg["adapter"] = adapter_block()
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=cfg)
    return nlp


def entity_examples(nlp: Language, gold: Any = ENT_GOLD) -> List[Example]:
    """Examples whose reference docs have the gold entities (``doc.ents = []`` for none)."""
    out = []
    for text, ents in gold:
        eg = Example(nlp.make_doc(text), nlp.make_doc(text))
        ref = eg.reference
        ref.ents = [
            ref.char_span(text.index(t), text.index(t) + len(t), label=lab) for t, lab in ents
        ]
        out.append(eg)
    return out
