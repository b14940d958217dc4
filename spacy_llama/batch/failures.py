"""A failing document fails alone: a text that cannot become a Doc becomes a stand-in
marked as failed, and a batch that raises is retried one doc at a time, so only the docs
that still fail are marked. The reason travels on ``doc.user_data`` (``ERROR_KEY``) rather
than in this process's memory, because with ``--n-process`` the pipeline runs in child
processes; the run writes marked docs to the failed list instead of the output."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from spacy.language import Language
from spacy.tokens import Doc

from ..errors import Errors
from .reader import ID_KEY, Record
from .sinks import ERROR_KEY


def isolate_failures(name: str, proc: Any, docs: Optional[Sequence[Doc]], error: Exception) -> None:
    """spaCy error handler: retry a failed batch one doc at a time; mark what still fails.
    Without docs (a worker process died) nothing can be attributed, so the error stands.
    A doc that already failed (see :func:`record_doc`) keeps its first reason."""
    if proc is None or not docs:
        raise error
    if len(docs) == 1:
        docs[0].user_data.setdefault(ERROR_KEY, f"{name}: {type(error).__name__}: {error}")
        return
    for doc in docs:
        if ERROR_KEY in doc.user_data:
            continue
        try:
            proc(doc)  # a Pipe's __call__ sends its own failure back here with [doc]
        except Exception as e:
            doc.user_data[ERROR_KEY] = f"{name}: {type(e).__name__}: {e}"


def record_doc(nlp: Language, rec: Record) -> Doc:
    """The Doc a record is annotated as: its own (a .spacy input keeps its annotations) or
    a new one, stamped with the record's id for the tasks' messages. A text that cannot
    become a Doc (longer than ``nlp.max_length``, or the tokenizer fails) becomes an empty
    stand-in marked as failed, so it is recorded in the failed list with its reason and
    the rest of its batch is written."""
    if rec.doc is not None:
        doc = rec.doc
    elif len(rec.text) > nlp.max_length:
        doc = _failed_doc(nlp, Errors.E086.format(length=len(rec.text), limit=nlp.max_length))
    else:
        try:
            doc = nlp.make_doc(rec.text)
        except Exception as e:  # one bad text must not stop the run
            doc = _failed_doc(nlp, Errors.E089.format(error=f"{type(e).__name__}: {e}"))
    doc.user_data[ID_KEY] = rec.raw_id
    return doc


def _failed_doc(nlp: Language, reason: str) -> Doc:
    doc = Doc(nlp.vocab, words=[])
    doc.user_data[ERROR_KEY] = reason
    return doc
