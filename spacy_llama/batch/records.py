"""What an annotated Doc becomes in the output: a JSON record, and a readable printout.

A record holds the document's ``id``, its input fields unchanged, each extension the
pipeline's llama components write (under its own name), ``ents`` as
``[start_char, end_char, label]``, ``spans`` (each ``doc.spans`` group the same way, e.g. the
entities of NER with ``merge = "spans"`` or Extract's span fields) and ``cats`` when the
pipeline sets any.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from .reader import FIELDS_KEY, Record
from .sinks import Finished


def pipeline_extensions(nlp: Language) -> List[str]:
    """The Doc extensions the pipeline's components say they write, in pipeline order."""
    names: List[str] = []
    for _, pipe in nlp.pipeline:
        for name in getattr(pipe, "extensions", None) or []:
            if name not in names:
                names.append(name)
    return names


def to_jsonable(value: Any) -> Any:
    """Extension values as JSON: spans become [start_char, end_char, label]."""
    if isinstance(value, Span):
        return [value.start_char, value.end_char, value.label_]
    if isinstance(value, Token):
        return [value.idx, value.idx + len(value), value.text]
    if isinstance(value, Doc):
        return value.text
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def doc_record(doc: Doc, record: Record, *, extensions: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"id": record.raw_id, **record.fields}
    for name in extensions:
        if Doc.has_extension(name):
            out[name] = to_jsonable(doc._.get(name))
    out["ents"] = [[e.start_char, e.end_char, e.label_] for e in doc.ents]
    groups = {key: group for key, group in doc.spans.items() if len(group)}
    if groups:
        out["spans"] = {
            key: [[s.start_char, s.end_char, s.label_] for s in group]
            for key, group in groups.items()
        }
    if doc.cats:
        out["cats"] = dict(doc.cats)
    return out


def format_doc(doc: Doc, record: Record, *, extensions: Sequence[str], width: int = 300) -> str:
    """A few lines a person can read: id, text, entities, and each text-valued extension."""
    text = doc.text if len(doc.text) <= width else doc.text[:width] + "..."
    lines = [f"== {record.raw_id} ==", text]
    ents = ", ".join(f"{e.text} ({e.label_})" for e in doc.ents)
    lines.append(f"  entities: {ents or '(none)'}")
    for name in extensions:
        value = doc._.get(name) if Doc.has_extension(name) else None
        if isinstance(value, str):
            lines.append(f"  {name}: {value.strip() or '(empty)'}")
    return "\n".join(lines)


def docbin_doc(doc: Doc, record: Record) -> Doc:
    """What goes into a DocBin: the doc with its input fields (its id is already stamped)."""
    fields = {k: v for k, v in record.fields.items() if k != "text"}
    if fields:
        doc.user_data[FIELDS_KEY] = fields
    return doc


def finished(
    doc: Doc, record: Record, *, extensions: Sequence[str], jsonl: bool, docbin: bool
) -> Finished:
    """A done document as the run's sinks want it (a JSONL record, a DocBin doc, or both)."""
    return Finished(
        id=record.id,
        record=doc_record(doc, record, extensions=extensions) if jsonl else None,
        doc=docbin_doc(doc, record) if docbin else None,
    )
