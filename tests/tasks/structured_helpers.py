"""Builders the structured-task tests share: a llama pipe on the tiny model whose engine
answers with hand-made GenerationResults (and keeps the requests it was given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_llama.generation.engine import Engine
from spacy_llama.types import GenerationRequest, GenerationResult


def structured_nlp(tiny_hf: Path, task: Dict[str, Any], max_new_tokens: int = 24) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "llama",
        config={
            "model": {"@llama_models": "spacy-llama.HF.v1", "path": str(tiny_hf), "device": "cpu"},
            "task": {"template": "{{ text }}", "chat": False, **task},
            "generation": {"max_new_tokens": max_new_tokens},
        },
    )
    return nlp


def answer_with(
    monkeypatch: pytest.MonkeyPatch, *results: GenerationResult
) -> List[GenerationRequest]:
    """The engine answers the n-th non-empty prompt with ``results[n]`` (an empty prompt,
    as the engine does, with finish_reason "empty"); returns the requests it was given."""
    seen: List[GenerationRequest] = []
    answers = iter(results)

    def run(self: Engine, requests: List[GenerationRequest]) -> List[GenerationResult]:
        seen.extend(requests)
        empty = GenerationResult(text="", finish_reason="empty")
        return [next(answers) if r.prompt.strip() else empty for r in requests]

    monkeypatch.setattr(Engine, "run", run)
    return seen


def docbin_roundtrip(doc: Doc) -> Doc:
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    return list(DocBin(store_user_data=True).from_bytes(data).get_docs(doc.vocab))[0]
