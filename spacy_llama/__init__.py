"""spacy_llama: run LLaMA-family models inside spaCy pipelines.

Importing this package registers the ``llama`` factory and the ``llama_*`` registries.
Nothing heavy (torch, transformers) is imported here.
"""

from __future__ import annotations

from typing import Any

from . import registry  # noqa: F401  (creates the registries)
from .tasks.extensions import register_extensions

__version__ = "0.1.0"

__all__ = ["__version__", "register_extensions", "registry", "render"]


def render(doc: Any, **options: Any) -> str:
    """displaCy views (HTML) of what the ``llama`` component added to ``doc``: doc.cats as
    a bar chart, EntityReview's labels and scores, relations as arcs, span groups such as
    Extract's. See :mod:`spacy_llama.views` for the options."""
    from .views import render as render_doc

    return render_doc(doc, **options)
