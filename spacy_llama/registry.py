"""The registries this package adds to spaCy's.

Beware: ``spacy.registry.create(name, entry_points=True)`` is thinc's classmethod and makes
catalogue read the entry-point group ``thinc_<name>``. We create the registries in spaCy's
namespace instead, as spaCy does for its own, so the groups read are ``spacy_llama_models``,
``spacy_llama_tasks``, ``spacy_llama_caches``, ``spacy_llama_readers`` and
``spacy_llama_adapters``.
"""

from __future__ import annotations

import catalogue
from spacy.util import registry

REGISTRY_NAMES = ("llama_models", "llama_tasks", "llama_caches", "llama_readers", "llama_adapters")

for _name in REGISTRY_NAMES:
    if not hasattr(registry, _name):
        setattr(registry, _name, catalogue.create("spacy", _name, entry_points=True))

llama_models = registry.llama_models  # type: ignore[attr-defined]
llama_tasks = registry.llama_tasks  # type: ignore[attr-defined]
llama_caches = registry.llama_caches  # type: ignore[attr-defined]
llama_readers = registry.llama_readers  # type: ignore[attr-defined]
llama_adapters = registry.llama_adapters  # type: ignore[attr-defined]
