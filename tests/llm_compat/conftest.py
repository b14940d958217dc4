from __future__ import annotations

from pathlib import Path

import pytest

from ..fixtures.tiny import make_tiny_hf


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model with room for spacy-llm's prompts (hundreds of words of
    instructions, ~1000 pieces of the tiny tokenizer)."""
    return make_tiny_hf(
        tmp_path_factory.mktemp("tiny_long"), config={"max_position_embeddings": 4096}
    )
