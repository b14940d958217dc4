"""spacy_llama: run LLaMA-family models inside spaCy pipelines.

Importing this package registers the ``llama`` factory and the ``llama_*`` registries.
Nothing heavy (torch, transformers) is imported here.
"""

from __future__ import annotations

from . import registry  # noqa: F401  (creates the registries)
from .tasks.extensions import register_extensions

__version__ = "0.1.0"

__all__ = ["__version__", "register_extensions", "registry"]
