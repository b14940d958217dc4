"""The engine counts of a run, stamped on each doc (``STATS_KEY``) by the pipeline's last
component, so the parent can total them whichever process (``--n-process``, a Ray actor)
did the work (:class:`.summary.Summary` adds them up)."""

from __future__ import annotations

from typing import List

from spacy.language import Language
from spacy.tokens import Doc

from ..pipeline import LlamaPipe
from .sinks import STATS_KEY
from .summary import STATS_FIELDS

COMPONENT = "spacy_llama_run_stats"


class RunStats:
    """Last component of a batch run: stamps each doc with the engine counts since the
    previous doc."""

    def __init__(self, nlp: Language) -> None:
        self.pipes = [pipe for _, pipe in nlp.pipeline if isinstance(pipe, LlamaPipe)]
        self.last = self._totals()

    def _totals(self) -> List[int]:
        return [sum(getattr(p.engine_stats, f) for p in self.pipes) for f in STATS_FIELDS]

    def __call__(self, doc: Doc) -> Doc:
        now = self._totals()
        doc.user_data[STATS_KEY] = {f: a - b for f, a, b in zip(STATS_FIELDS, now, self.last)}
        self.last = now
        return doc


@Language.factory(COMPONENT)
def make_run_stats(nlp: Language, name: str) -> RunStats:
    return RunStats(nlp)
