"""Labels that may come from the training data: a labelled task built with ``labels = []``
(allowed only with an adapter block, see pipeline.py) gets its labels in ``initialize``, as
spaCy's own ``textcat`` does, and keeps them in its saved ``task.json``.

Verbalizers, definitions and few-shot examples given in the config are kept as written and
checked once the labels are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .examples import Example, FewShotState
from .labels import Label, make_labels
from .saved import read_task


@dataclass(frozen=True)
class LabelSpec:
    """What the config says about labels besides their names."""

    verbalizers: Dict[str, str] = field(default_factory=dict)
    definitions: Dict[str, str] = field(default_factory=dict)
    extra: Tuple[str, ...] = ()  # appended to the labels (EntityReview's none_label)


class DataLabels(FewShotState):
    """A labelled task whose labels may be set after it is built."""

    spec: LabelSpec = LabelSpec()
    _pending_examples: List[Example] = []

    def _start(self, labels: List[Label], examples: List[Example], spec: LabelSpec) -> None:
        """Keep the labels; without any, keep the few-shot examples unchecked until
        ``set_labels``."""
        self.spec = spec
        self.labels = labels
        self._pending_examples = list(examples)
        self.examples = self._check_examples(examples) if labels else []

    @property
    def needs_labels(self) -> bool:
        return not self.labels

    def set_labels(self, names: Sequence[str]) -> None:
        """Labels named by the training data, with the config's verbalizers and definitions
        of those labels: the config may name more (a shipped config's verbalizers are optional
        for data that does not have their label)."""
        names = list(names) + list(self.spec.extra)
        labels = make_labels(
            names,
            verbalizers={k: v for k, v in self.spec.verbalizers.items() if k in names},
            definitions={k: v for k, v in self.spec.definitions.items() if k in names},
        )
        self._adopt(labels)

    def _adopt(self, labels: List[Label]) -> None:
        self.labels = labels
        self.examples = self._check_examples(self._pending_examples)
        self._labels_changed()

    def _labels_changed(self) -> None:
        """Recompute what depends on the labels (NER's answer lookup)."""

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> Any:
        """A task built without labels takes those saved with it (from training)."""
        data = read_task(path) if self.needs_labels else None
        if data is not None:
            saved = data.get("labels") or []
            if saved:
                self._adopt([Label(**x) for x in saved])
        if self.needs_labels:
            return self
        return super().from_disk(path, exclude=exclude)
