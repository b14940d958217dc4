"""Small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import spacy
from spacy.language import Language


def tiny_llama_config(
    path: Path,
    *,
    template: str = "{{ text }}",
    chat: bool = False,
    generation: Optional[Dict[str, Any]] = None,
    **component: Any,
) -> Dict[str, Any]:
    return {
        "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(path), "device": "cpu"},
        "task": {"@llama_tasks": "spacy-llama.Completion.v1", "template": template, "chat": chat},
        "generation": {"max_new_tokens": 8, **(generation or {})},
        **component,
    }


def tiny_nlp(path: Path, **kwargs: Any) -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("llama", config=tiny_llama_config(path, **kwargs))
    return nlp
