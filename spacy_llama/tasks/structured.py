"""What the structured-output tasks (Extract, NER.v2, REL) share: the doc's candidate
substrings (a JSON-schema ``enum``, so the same schema constrains our engine and a server
that takes ``json_schema``), finding each chosen string in the doc in order, and reading a
constrained answer, or marking its doc failed (``types.DOC_ERROR_KEY``) instead of raising
for the batch or writing half an object.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jsonschema
from spacy.tokens import Doc, Span

from ..errors import Errors, SchemaError
from ..types import DOC_ERROR_KEY, Constraint, GenerationResult
from .base import doc_label
from .prompt import DocLike

logger = logging.getLogger("spacy_llama")
DEFAULT_MAX_SPAN_TOKENS = 8
# How each structured answer ended: "stop" (the model finished it), "closed" (the token
# budget cut it and the engine closed it onto its shortest valid completion: complete and
# valid, but worth filtering or re-running), or the engine's other finish reasons.
FINISH_ATTR = "llama_finish"


def _sentence_ranges(doc: DocLike) -> List[Tuple[int, int]]:
    """Token ranges (relative to ``doc``) of its sentences; one range without sentences."""
    tokens = list(doc)
    real = doc.doc if isinstance(doc, Span) else doc
    if not real.has_annotation("SENT_START"):
        return [(0, len(tokens))]
    starts = [k for k, t in enumerate(tokens) if k == 0 or t.is_sent_start]
    return list(zip(starts, starts[1:] + [len(tokens)]))


def candidate_substrings(doc: DocLike, max_span_tokens: int) -> List[str]:
    """Every token n-gram of ``doc`` up to ``max_span_tokens`` tokens, inside one sentence,
    neither starting nor ending with punctuation or whitespace and holding no whitespace
    token; deduplicated, in order of first occurrence. Each is token-aligned by
    construction, so a string the model picks from them always becomes a Span."""
    tokens = list(doc)
    text = (doc.doc if isinstance(doc, Span) else doc).text  # Doc.text joins every token
    seen: Dict[str, None] = {}
    for a, b in _sentence_ranges(doc):
        for i in range(a, b):
            if tokens[i].is_punct or tokens[i].is_space:
                continue
            for j in range(i, min(b, i + max_span_tokens)):
                if tokens[j].is_space:
                    break
                if not tokens[j].is_punct:
                    seen.setdefault(text[tokens[i].idx : tokens[j].idx + len(tokens[j])], None)
    return list(seen)


class Occurrences:
    """Where each string occurs in a doc on token boundaries; ``find`` takes the first
    occurrence at or after the cursor (so repeated names follow the model's order), else
    the first one."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc

    def find(self, text: str, cursor: int, label: str) -> Optional[Span]:
        found: List[Span] = []
        start = self.doc.text.find(text)
        while start != -1 and text:
            span = self.doc.char_span(start, start + len(text), label=label)
            if span is not None:
                if span.start_char >= cursor:
                    return span
                found.append(span)
            start = self.doc.text.find(text, start + 1)
        return found[0] if found else None


def align_strings(doc: Doc, texts: Sequence[str], label: str) -> List[Span]:
    """One Span per string, in order (a string the doc does not hold on token boundaries
    cannot come from the constrained answer; it is logged, never written half-aligned)."""
    index, cursor, out = Occurrences(doc), 0, []
    for text in texts:
        span = index.find(text, cursor, label)
        if span is None:
            logger.warning(
                "[spacy-llama] %r (%s) is not on token boundaries in %s; not written",
                text,
                label,
                doc_label(doc),
            )
            continue
        out.append(span)
        cursor = span.end_char
    return out


def check_max_items(task: str, setting: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise SchemaError(Errors.E374.format(task=task, setting=setting, value=value))


def check_max_string_tokens(task: str, value: Optional[int]) -> int:
    """The task's ``max_string_tokens`` as the constraint carries it (0: no cap)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(Errors.E651.format(task=task, value=value))
    return value


def check_calibration(
    task: str, calibrate: bool, content_free: Any, prior_weight: Any
) -> Tuple[List[str], float]:
    """The content-free texts (as a list) and the prior weight of an enum calibration."""
    texts = [content_free] if isinstance(content_free, str) else list(content_free or [])
    if (calibrate and not texts) or not all(isinstance(t, str) for t in texts):
        raise SchemaError(Errors.E654.format(task=task, got=content_free))
    if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) or not (
        0.0 <= prior_weight <= 1.0
    ):
        raise SchemaError(Errors.E655.format(task=task, value=prior_weight))
    return texts, float(prior_weight)


def json_constraint(schema: Dict[str, Any], max_string_tokens: int = 0) -> Constraint:
    """``max_string_tokens``: the most tokens one free string value may hold (0: no cap;
    ``grammar.RowGrammar.cap_string``), honoured by the local engine."""
    return Constraint(
        kind="json_schema",
        spec=json.dumps(schema, ensure_ascii=False),
        max_string_tokens=max_string_tokens,
    )


def read_answer(doc: Doc, res: GenerationResult, schema: Dict[str, Any], task: str) -> Any:
    """The answer's JSON value if it is complete and matches ``schema``; otherwise the doc
    is marked failed (the reason under ``DOC_ERROR_KEY``) and None is returned."""
    if Doc.has_extension(FINISH_ATTR):
        doc._.set(FINISH_ATTR, "closed" if res.closed else res.finish_reason)
    if res.error is not None:
        return _fail(doc, task, Errors.E369.format(error=res.error))
    try:
        value = json.loads(res.text)
    except json.JSONDecodeError as e:
        if res.finish_reason == "length":
            return _fail(doc, task, Errors.E373.format(error=e))
        return _fail(doc, task, Errors.E370.format(error=e))
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "the top level"
        return _fail(doc, task, Errors.E371.format(error=f"{error.message} (at {where})"))
    return value


def confidences(value: Any, res: GenerationResult) -> Dict[str, float]:
    """The engine's probability of each value it chose from a closed set (an enum field),
    by the field's JSON pointer (``/section``, ``/items/0/label``). The answer is written
    as json.dumps writes it (", " and ": "), so each leaf's offset in the text is found by
    writing the value again; a text written otherwise gets no confidences."""
    if not res.choices:
        return {}
    leaves: Dict[int, str] = {}
    if _write(value, "", leaves) != res.text:
        return {}
    out: Dict[str, float] = {}
    for choice in res.choices:
        path = leaves.get(int(choice["start"]))
        if path is not None and choice["text"] in choice["alternatives"]:
            out[path] = float(choice["probs"][choice["alternatives"].index(choice["text"])])
    return out


def _write(value: Any, path: str, leaves: Dict[int, str], at: int = 0) -> str:
    """``value`` as json.dumps(..., ensure_ascii=False) writes it; ``leaves`` gets the
    offset (from ``at``) of every scalar, with its JSON pointer."""
    if isinstance(value, dict):
        parts, pos = ["{"], at + 1
        for k, (key, item) in enumerate(value.items()):
            head = (", " if k else "") + json.dumps(key, ensure_ascii=False) + ": "
            pos += len(head)
            text = _write(item, f"{path}/{key}", leaves, pos)
            parts += [head, text]
            pos += len(text)
        return "".join(parts) + "}"
    if isinstance(value, list):
        parts, pos = ["["], at + 1
        for k, item in enumerate(value):
            head = ", " if k else ""
            pos += len(head)
            text = _write(item, f"{path}/{k}", leaves, pos)
            parts += [head, text]
            pos += len(text)
        return "".join(parts) + "]"
    leaves[at] = path
    return json.dumps(value, ensure_ascii=False)


def _fail(doc: Doc, task: str, reason: str) -> None:
    message = f"{task}: {reason}"
    doc.user_data.setdefault(DOC_ERROR_KEY, message)  # an earlier failure keeps its reason
    logger.warning("[spacy-llama] %s failed: %s", doc_label(doc), message)
    return None
