"""``spacy-llama.sourced_lookups.v1``: the lookup tables of a sourced pipeline's lemmatizer.

The shipped configs source en_core_web_sm's components. ``spacy debug data`` (and any
``nlp.initialize()`` on the whole pipeline) initializes them again, and spaCy's lemmatizer
then loads its tables from ``spacy-lookups-data``, a package the pipeline itself does not
need: it fails with E955 without it. The configs give the lemmatizer the tables it was
sourced with instead (``[initialize.components.lemmatizer.lookups]``).
"""

from __future__ import annotations

from spacy.lookups import Lookups
from spacy.util import registry


@registry.misc("spacy-llama.sourced_lookups.v1")
def sourced_lookups_v1(name: str, component: str = "lemmatizer") -> Lookups:
    """The lookups of ``component`` in the pipeline ``name`` (a package or a folder)."""
    import spacy

    lookups: Lookups = getattr(spacy.load(name).get_pipe(component), "lookups")  # noqa: B009
    return lookups
