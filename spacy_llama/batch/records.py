"""What an annotated Doc becomes in the output: a JSON record, and a readable printout.

A record holds the document's ``id``, its input fields unchanged, each Doc extension the
pipeline's llama components write (under its own name), ``ents`` as
``[start_char, end_char, label]`` (character offsets into ``text``), ``spans`` (each
``doc.spans`` group the same way, e.g. the entities of NER with ``merge = "spans"`` or
Extract's span fields) and ``cats`` when the pipeline sets any. A span that carries values of
the pipeline's Span extensions gets them as a fourth element, ``{name: value}``
(``[0, 5, "PERSON", {"llama_label": "PERSON", "llama_scores": {...}}]``). Token extensions
come as arrays aligned to ``tokens`` (``[start_char, end_char, text]`` per token), which is
written only then. docs/records.md has the format per task.

Extension names arrive as spaCy writes them in ``assigns``: ``span._.x`` and ``token._.x``
for Span and Token extensions, and ``doc._.x`` or a bare ``x`` for Doc extensions.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from .reader import FIELDS_KEY, Record
from .sinks import Finished


def pipeline_extensions(nlp: Language) -> List[str]:
    """The extensions the pipeline's components say they write, in pipeline order: from
    their ``assigns`` (``doc._.x``, ``span._.x``, ``token._.x``) when they have them, else
    their ``extensions`` (Doc extensions)."""
    names: List[str] = []
    for _, pipe in nlp.pipeline:
        assigns = getattr(pipe, "assigns", None)
        if assigns is not None:
            found = [a for a in assigns if a.split("._.", 1)[0] in ("doc", "span", "token")]
        else:
            found = list(getattr(pipe, "extensions", None) or [])
        for name in found:
            if name not in names:
                names.append(name)
    return names


def split_levels(extensions: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
    """The Doc, Span and Token extension names among ``extensions`` (bare: Doc)."""
    levels: Dict[str, List[str]] = {"doc": [], "span": [], "token": []}
    for item in extensions:
        level, _, name = item.rpartition("._.")
        levels[level if level in levels else "doc"].append(name)
    return levels["doc"], levels["span"], levels["token"]


def span_entry(span: Span, span_extensions: Sequence[str]) -> List[Any]:
    """``[start_char, end_char, label]``, plus ``{name: value}`` of the span's extension
    values that are set."""
    entry: List[Any] = [span.start_char, span.end_char, span.label_]
    values = {
        name: to_jsonable(span._.get(name))
        for name in span_extensions
        if Span.has_extension(name) and span._.get(name) is not None
    }
    if values:
        entry.append(values)
    return entry


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
    doc_names, span_names, token_names = split_levels(extensions)
    for name in doc_names:
        if Doc.has_extension(name):
            out[name] = to_jsonable(doc._.get(name))
    token_names = [name for name in token_names if Token.has_extension(name)]
    if token_names:
        out["tokens"] = [[t.idx, t.idx + len(t), t.text] for t in doc]
        for name in token_names:
            out[name] = [to_jsonable(t._.get(name)) for t in doc]
    out["ents"] = [span_entry(e, span_names) for e in doc.ents]
    groups = {key: group for key, group in doc.spans.items() if len(group)}
    if groups:
        out["spans"] = {
            key: [span_entry(s, span_names) for s in group] for key, group in groups.items()
        }
    if doc.cats:
        out["cats"] = dict(doc.cats)
    return out


def format_doc(doc: Doc, record: Record, *, extensions: Sequence[str], width: int = 300) -> str:
    """A few lines a person can read: id, text, entities, span groups, categories, and each
    text-valued Doc extension."""
    text = doc.text if len(doc.text) <= width else doc.text[:width] + "..."
    lines = [f"== {record.raw_id} ==", text]
    ents = ", ".join(f"{e.text} ({e.label_})" for e in doc.ents)
    lines.append(f"  entities: {ents or '(none)'}")
    for key, group in doc.spans.items():
        if len(group):
            lines.append(f"  spans[{key}]: " + ", ".join(f"{s.text} ({s.label_})" for s in group))
    if doc.cats:
        ranked = sorted(doc.cats.items(), key=lambda kv: -kv[1])
        lines.append("  cats: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked))
    for name in split_levels(extensions)[0]:
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
