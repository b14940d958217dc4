"""Few-shot examples: reading them, checking them against a task's labels, and keeping
them with a saved pipeline.

``spacy-llama.FewShotReader.v1`` (registry ``llama_readers``) reads examples from JSONL, JSON
or YAML. Each task checks the examples against its own labels, so an unknown label fails when
the pipeline is built, naming the example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import srsly

from ..errors import Errors, FewShotError
from ..registry import llama_readers
from .labels import Label, check_label, labels_context
from .prompt import PromptTemplate
from .saved import read_task, write_task

Example = Dict[str, Any]


@llama_readers("spacy-llama.FewShotReader.v1")
def fewshot_reader_v1(*, path: str, limit: Optional[int] = None) -> List[Example]:
    """Examples from a .jsonl/.json/.yml/.yaml file: a list of objects with a "text"."""
    file = Path(path)
    if not file.exists():
        raise FewShotError(Errors.E304.format(path=str(file)))
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        data: Any = list(srsly.read_jsonl(file))
    elif suffix == ".json":
        data = srsly.read_json(file)
    elif suffix in (".yml", ".yaml"):
        data = srsly.read_yaml(file)
    else:
        raise FewShotError(Errors.E305.format(path=str(file)))
    if isinstance(data, dict) and "examples" in data:
        data = data["examples"]  # YAML files often nest the list under a key
    if not isinstance(data, list):
        raise FewShotError(Errors.E306.format(path=str(file)))
    for i, ex in enumerate(data):
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str):
            raise FewShotError(Errors.E307.format(index=i, path=str(file)))
        ex.setdefault("_source", f"example {i} in {str(file)!r}")
    return data[:limit] if limit is not None else data


def example_name(ex: Example, i: int) -> str:
    return str(ex.get("_source", f"few-shot example {i}"))


def read_examples(path: Path) -> Optional[List[Example]]:
    """The few-shot examples saved with a pipeline, so a saved pipeline is self-contained."""
    data = read_task(path)
    if data is None:
        return None
    return list(data["examples"]) if data.get("examples") is not None else None


class FewShotState:
    """``to_disk``/``from_disk`` for tasks that carry labels and few-shot examples: the
    examples travel with a saved pipeline and are checked against the labels on load."""

    labels: List[Label]
    examples: List[Example]
    template: PromptTemplate

    def _check_examples(self, examples: List[Example]) -> List[Example]:
        raise NotImplementedError

    def _state(self) -> Dict[str, Any]:
        return {
            "labels": labels_context(self.labels),
            "examples": self.examples,
            "template": self.template.source,
        }

    def to_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> None:
        write_task(path, self._state())

    def from_disk(self, path: Path, *, exclude: Iterable[str] = ()) -> Any:
        examples = read_examples(path)
        if examples is not None:
            self.examples = self._check_examples(examples)
        return self


def check_entity_examples(
    examples: List[Example], labels: Sequence[Label], *, require_in_text: bool
) -> List[Example]:
    """NER-style examples: {"text": ..., "entities": [{"text": ..., "label": ...}]}, each
    label checked against ``labels`` (and, if asked, each entity found in its text)."""
    known = {x.name: x for x in labels}
    out = []
    for i, ex in enumerate(examples):
        ents = ex.get("entities")
        if not isinstance(ents, list):
            raise FewShotError(Errors.E308.format(example=example_name(ex, i)))
        checked = []
        for e in ents:
            label = check_label(e.get("label"), known, example_name(ex, i))
            if require_in_text and e.get("text") not in ex["text"]:
                raise FewShotError(
                    Errors.E309.format(example=example_name(ex, i), entity=e.get("text"))
                )
            checked.append({"text": e["text"], "label": label.name, "answer": label.answer})
        out.append({"text": ex["text"], "entities": checked})
    return out
