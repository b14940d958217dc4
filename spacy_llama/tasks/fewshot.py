"""Few-shot examples, labels with definitions, and helpers the annotation tasks share.

``spacy-llama.FewShotReader.v1`` (registry ``llama_readers``) reads examples from JSONL, JSON
or YAML. Each task checks the examples against its own labels, so an unknown label fails when
the pipeline is built, naming the example. Prompts are fitted to the context with the model's
own tokenizer (through the formatter), never by counting words.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, TypeVar

import srsly
from spacy.tokens import Doc, Span, Token

from ..registry import llama_readers
from ..types import GenerationRequest, PromptTooLongError
from .base import PromptFormatter
from .prompt import DocLike, PromptTemplate

Overflow = Literal["truncate", "error"]
Example = Dict[str, Any]
T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"


class FewShotError(ValueError):
    """Few-shot examples or labels are malformed; the message names the file and example."""


# -- the reader ------------------------------------------------------------------------------
@llama_readers("spacy-llama.FewShotReader.v1")
def fewshot_reader_v1(*, path: str, limit: Optional[int] = None) -> List[Example]:
    """Examples from a .jsonl/.json/.yml/.yaml file: a list of objects with a "text"."""
    file = Path(path)
    if not file.exists():
        raise FewShotError(f"Few-shot file {str(file)!r} does not exist (check `path`).")
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        data: Any = list(srsly.read_jsonl(file))
    elif suffix == ".json":
        data = srsly.read_json(file)
    elif suffix in (".yml", ".yaml"):
        data = srsly.read_yaml(file)
    else:
        raise FewShotError(f"Few-shot file {str(file)!r}: use .jsonl, .json, .yml or .yaml.")
    if isinstance(data, dict) and "examples" in data:
        data = data["examples"]  # YAML files often nest the list under a key
    if not isinstance(data, list):
        raise FewShotError(f"Few-shot file {str(file)!r} must hold a list of examples.")
    for i, ex in enumerate(data):
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str):
            raise FewShotError(f'Few-shot example {i} in {str(file)!r} has no "text" string.')
        ex.setdefault("_source", f"example {i} in {str(file)!r}")
    return data[:limit] if limit is not None else data


def example_name(ex: Example, i: int) -> str:
    return str(ex.get("_source", f"few-shot example {i}"))


# -- labels ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Label:
    name: str  # what is written to doc.cats / ent.label_
    answer: str  # what the model is asked to say (the verbalizer)
    definition: str = ""


def make_labels(
    labels: Sequence[str],
    *,
    verbalizers: Dict[str, str],
    definitions: Dict[str, str],
) -> List[Label]:
    """Validate the label config: non-empty, unique, and no stray verbalizer or definition."""
    if not labels:
        raise FewShotError("The task needs at least one label (`labels` is empty).")
    if len(set(labels)) != len(labels) or any(not str(x).strip() for x in labels):
        raise FewShotError(f"Labels must be unique, non-empty strings; got {list(labels)}.")
    for what, table in (("verbalizers", verbalizers), ("label_definitions", definitions)):
        stray = sorted(set(table) - set(labels))
        if stray:
            raise FewShotError(f"`{what}` names unknown labels {stray}; labels are {labels}.")
    out = [Label(x, verbalizers.get(x, x), definitions.get(x, "")) for x in labels]
    answers = [x.answer for x in out]
    if len(set(answers)) != len(answers):
        raise FewShotError(f"Two labels share a verbalizer: {answers}.")
    return out


def labels_context(labels: Sequence[Label]) -> List[Dict[str, str]]:
    return [asdict(x) for x in labels]


def check_label(label: Any, known: Dict[str, Label], where: str) -> Label:
    if label not in known:
        raise FewShotError(
            f"Unknown label {label!r} in {where}; the task's labels are {sorted(known)}. "
            "Fix the example or add the label to `labels`."
        )
    return known[label]


# -- templates ---------------------------------------------------------------------------------
def load_template(template: Optional[str], template_path: Optional[str], default: str) -> Any:
    """An inline template, a template file, or the packaged default ``templates/<default>``."""
    if template is not None:
        return PromptTemplate.load(template, template_path)
    return PromptTemplate.load("", template_path or str(TEMPLATES / default))


def content_free_doc(vocab: Any, text: str) -> Doc:
    """A doc of ``text`` (e.g. "N/A") for contextual calibration, without trailing space."""
    words = text.split() or ["N/A"]
    return Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False])


# -- fitting a prompt into the context -------------------------------------------------------
def token_count(formatter: PromptFormatter, text: str) -> int:
    """Tokens of a bare string (a candidate answer), counted with the model's tokenizer."""
    return formatter.count(GenerationRequest(prompt=text, add_special_tokens=False))


def fit_doc(
    doc: DocLike,
    build: Callable[[DocLike], T],
    fits: Callable[[T], bool],
    *,
    on_overflow: Overflow,
    label: str,
) -> T:
    """``build(doc)`` if it fits, else ``build`` of the longest prefix of ``doc`` that does."""
    full = build(doc)
    if fits(full):
        return full
    if on_overflow == "error":
        raise PromptTooLongError(
            f"The prompt for {label} does not fit the model's context. Shorten the document "
            'or set on_overflow = "truncate" in the task config.'
        )
    lo, hi, best = 0, len(doc) - 1, None
    while lo <= hi:  # the largest k with doc[:k] fitting
        mid = (lo + hi) // 2
        cand = build(doc[:mid])
        if fits(cand):
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise PromptTooLongError(
            f"The prompt template alone (without {label}'s text) does not fit the model's "
            "context; shorten the template, the label definitions or the few-shot examples."
        )
    warnings.warn(
        f"[spacy-llama] The prompt for {label} did not fit the model's context; the document "
        f"was truncated to its first {lo - 1} of {len(doc)} tokens.",
        stacklevel=3,
    )
    return best


# -- extensions and persistence ------------------------------------------------------------
def install_extensions(
    *, doc: Iterable[str] = (), span: Iterable[str] = (), token: Iterable[str] = ()
) -> None:
    """Install extensions once (default None); re-installing the same name is a no-op."""
    for cls, names in ((Doc, doc), (Span, span), (Token, token)):
        for name in names:
            if not cls.has_extension(name):
                cls.set_extension(name, default=None)


def check_names(**names: str) -> None:
    """Extension names come from the config: they must be distinct, non-empty identifiers."""
    values = list(names.values())
    bad = [k for k, v in names.items() if not v or not v.isidentifier()]
    if bad or len(set(values)) != len(values):
        raise FewShotError(f"Extension names must be distinct identifiers; got {names}.")


def write_task(path: Path, data: Dict[str, Any]) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    srsly.write_json(path / "task.json", data)


def read_examples(path: Path) -> Optional[List[Example]]:
    """The few-shot examples saved with a pipeline, so a saved pipeline is self-contained."""
    file = Path(path) / "task.json"
    if not file.exists():
        return None
    data = srsly.read_json(file)
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
            raise FewShotError(f'{example_name(ex, i)} has no "entities" list.')
        checked = []
        for e in ents:
            label = check_label(e.get("label"), known, example_name(ex, i))
            if require_in_text and e.get("text") not in ex["text"]:
                raise FewShotError(f"{example_name(ex, i)}: {e.get('text')!r} is not in it.")
            checked.append({"text": e["text"], "label": label.name, "answer": label.answer})
        out.append({"text": ex["text"], "entities": checked})
    return out
