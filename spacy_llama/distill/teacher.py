"""Step 1: the teacher. What its llama task predicts (read from its config, before any model
is loaded, so a wrong ``--student`` is refused at once), and its annotations of a corpus,
made by ``annotate``'s own durable, resumable run (batch/local.py): a killed distill resumes
the run, and no document is annotated twice.

The run writes ``annotations.jsonl`` (the records people read) and ``annotations.spacy`` (a
DocBin folder: the Docs with ``span._.llama_score`` and the record ids in ``user_data``),
which the later steps read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from spacy.tokens import Doc, DocBin
from spacy.util import registry
from spacy.vocab import Vocab

from ..batch.loading import load_pipeline, read_run_config
from ..batch.options import AnnotateOptions
from ..batch.sinks import docbin_parts
from ..batch.summary import Summary
from ..errors import DistillError, Errors
from ..tasks.base import Task
from ..tasks.entity_review import EntityReviewTask
from ..tasks.extract import ExtractTask
from ..tasks.ner import NERTask
from ..tasks.textcat import TextCatTask

STUDENTS = ("textcat", "ner", "spancat")
# What each kind of teacher task can teach: the task's predictions are the student's labels.
COMBOS = {"textcat": ("textcat",), "ner": ("ner", "spancat"), "extract": ("spancat",)}


@dataclass
class Teacher:
    """What the teacher's llama component predicts and where it writes it."""

    path: Path
    component: str
    task_name: str  # the registered name, e.g. spacy-llama.TextCat.v2
    kind: str  # "textcat", "ner" or "extract"
    labels: List[str]
    exclusive: bool = True  # textcat: one label per doc
    spans_key: Optional[str] = None  # where the task's spans are (None: doc.ents)
    # EntityReview: the span extension holding each label's probability (else llama_score)
    label_probs_attr: Optional[str] = None
    sourced: Dict[str, str] = field(default_factory=dict)  # component -> where it comes from

    def to_json(self) -> Dict[str, Any]:
        return {
            "path": str(self.path),
            "component": self.component,
            "task": self.task_name,
            "kind": self.kind,
            "labels": self.labels,
            "exclusive": self.exclusive,
            "spans_key": self.spans_key,
            "label_probs_attr": self.label_probs_attr,
            "sourced": self.sourced,
        }


def inspect_teacher(path: Path, overrides: Dict[str, Any], student: str) -> Teacher:
    """The teacher's llama task, read from its config; refuses a student it cannot feed."""
    config = read_run_config(path, overrides=overrides).interpolate()
    components = config.get("components", {})
    names = [
        n for n in config["nlp"]["pipeline"] if components.get(n, {}).get("factory") == "llama"
    ]
    if not names:
        raise DistillError(Errors.E700.format(path=path))
    name = names[-1]
    block = components[name]["task"]
    task = registry.resolve({"task": block})["task"]
    task_name = str(block.get("@llama_tasks", "?"))
    kind = _kind(task, task_name)
    if student not in COMBOS[kind]:
        raise DistillError(Errors.E702.format(student=student, task=task_name, combos=_combos()))
    labels = _labels(task)
    if not labels and path.is_dir():  # labels learnt from the training data: in the folder
        pipe: Any = load_pipeline(path, overrides=overrides).get_pipe(name)
        labels = _labels(pipe.task)
    if not labels:
        raise DistillError(Errors.E701.format(task=task_name, name=name))
    spans_key: Optional[str] = None
    if kind == "extract" or (kind == "ner" and getattr(task, "merge", "") == "spans"):
        spans_key = task.spans_key
    sourced = {
        n: str(path) if path.is_dir() else str(components[n]["source"])
        for n in config["nlp"]["pipeline"]
        if n != name and (path.is_dir() or "source" in components.get(n, {}))
    }
    return Teacher(
        path=path,
        component=name,
        task_name=task_name,
        kind=kind,
        labels=labels,
        exclusive=bool(getattr(task, "exclusive", True)),
        spans_key=spans_key,
        label_probs_attr=task.scores_attr if isinstance(task, EntityReviewTask) else None,
        sourced=sourced,
    )


def _kind(task: Task, name: str) -> str:
    if isinstance(task, TextCatTask):
        return "textcat"
    if isinstance(task, (NERTask, EntityReviewTask)):
        return "ner"
    if isinstance(task, ExtractTask):
        return "extract"
    tasks = (
        "TextCat.v1/v2 (-> textcat), NER.v1/v2 and EntityReview.v1 (-> ner, spancat), "
        "Extract.v1 (-> spancat)"
    )
    raise DistillError(Errors.E703.format(task=name, tasks=tasks))


def _combos() -> str:
    return "; ".join(f"a {k} teacher -> --student {' or '.join(v)}" for k, v in COMBOS.items())


def _labels(task: Task) -> List[str]:
    if isinstance(task, ExtractTask):
        return list(task.span_fields)
    return [x.name for x in getattr(task, "labels", [])]


def annotate_corpus(
    teacher: Path,
    overrides: Dict[str, Any],
    input_path: Path,
    jsonl: Path,
    *,
    batch_size: Optional[int] = None,
    quiet: bool = False,
    cache: bool = True,
) -> Summary:
    """``annotate TEACHER INPUT jsonl --docbin <jsonl>.spacy``, resuming a run a kill cut
    short (its finished batches are kept; nothing is annotated twice)."""
    from ..batch.local import annotate

    docbin = jsonl.with_suffix(".spacy")
    opts = AnnotateOptions(
        config=teacher,
        input=input_path,
        output=jsonl,
        overrides=overrides,
        docbin=docbin,
        resume=jsonl.exists() or docbin.exists(),
        batch_size=batch_size,
        quiet=quiet,
        no_cache=not cache,
    )
    summary = annotate(opts)
    if summary.done + summary.skipped == 0:
        raise DistillError(Errors.E708.format(path=input_path, failed=summary.failed_path))
    return summary


def teacher_docs(jsonl: Path, vocab: Vocab) -> Iterator[Doc]:
    """The annotated Docs of a teacher run (its DocBin folder), in the order written."""
    for part in docbin_parts(jsonl.with_suffix(".spacy")):
        yield from DocBin(store_user_data=True).from_disk(part).get_docs(vocab)


def write_texts(docs: List[Doc], path: Path) -> None:
    """Texts (with their ids) for the teacher to annotate: the gold set's, without labels."""
    from ..batch.files import write_atomic
    from ..batch.reader import ID_KEY

    lines = [
        json.dumps({"id": str(d.user_data.get(ID_KEY, f"gold-{i}")), "text": d.text}) + "\n"
        for i, d in enumerate(docs)
    ]
    write_atomic(path, "".join(lines).encode("utf-8"))
