"""What a run did: documents done, skipped and failed, and the engine's counts.

The counts travel on each doc (``doc.user_data[STATS_KEY]``, a dict keyed by
``STATS_FIELDS``), because with ``--n-process`` or Ray the work happens in other processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

STATS_FIELDS = (
    "generated_tokens", "model_calls", "cache_hits", "repaired_answers", "scored_tokens"
)


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # of ``seconds``: reading the config and loading the model
    generated_tokens: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    repaired_answers: int = 0  # answers with a lone surrogate or a NaN log-probability
    scored_tokens: int = 0  # scoring tasks (TextCat, EntityReview, Surprisal) read, not write
    failed_path: Optional[Path] = None

    def add_stats(self, stats: Optional[Mapping[str, int]]) -> None:
        """Add one doc's engine counts (see ``run_stats.RunStats``)."""
        for name in STATS_FIELDS:
            setattr(self, name, getattr(self, name) + int((stats or {}).get(name, 0)))

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failed_path"] = str(self.failed_path) if self.failed_path else None
        return data

    def line(self) -> str:
        # rates over the annotation itself: loading a model is paid once per run
        secs = max(self.seconds - self.load_seconds, 1e-9)
        rates = []
        if self.generated_tokens or not self.scored_tokens:
            rates.append(f"{self.generated_tokens / secs:.1f} tokens/s")
        if self.scored_tokens:  # a scoring task generates nothing: say what it did
            rates.append(f"{self.scored_tokens / secs:.1f} scored tokens/s")
        text = (
            f"{self.done} docs done, {self.skipped} skipped (already done), {self.failed} failed "
            f"in {self.seconds:.1f}s ({self.load_seconds:.1f}s loading the pipeline; then "
            f"{self.done / secs:.1f} docs/s, {', '.join(rates)}; "
            f"{self.model_calls} model calls, {self.cache_hits} cache hits)"
        )
        if self.repaired_answers:
            text += (
                f"; {self.repaired_answers} answers repaired (a lone surrogate or a NaN "
                "log-probability, see W601)"
            )
        if self.failed:
            text += f". FAILED documents are listed in {self.failed_path}"
        return text
