"""Builders the structured-task tests share: a llama pipe on the tiny model whose engine
answers with hand-made GenerationResults (and keeps the requests it was given)."""

from __future__ import annotations

from typing import List

import pytest
from spacy.tokens import Doc, DocBin

from spacy_llama.generation.engine import Engine
from spacy_llama.types import GenerationRequest, GenerationResult

from ..fixtures.helpers import structured_nlp

__all__ = ["answer_with", "docbin_roundtrip", "structured_nlp"]


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
