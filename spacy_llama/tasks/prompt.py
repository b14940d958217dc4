"""Jinja2 prompts rendered in a sandbox from a Doc and its upstream annotations."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from spacy.tokens import Doc, Span

from ..errors import Errors, TemplateError
from ..rendering import (
    TEMPLATE_CHARS,
    TEMPLATE_SECONDS,
    BudgetedSandbox,
    BudgetExceeded,
    render_budgeted,
)

DocLike = Union[Doc, Span]
TEMPLATES = Path(__file__).parent / "templates"  # the packaged default prompts


def _environment() -> SandboxedEnvironment:
    # budgeted: a shared template cannot hang or exhaust the process (rendering.py)
    return BudgetedSandbox(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )


class PromptTemplate:
    def __init__(self, source: str, *, name: str = "<template>") -> None:
        self.source = source
        self.name = name
        env = _environment()
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                Errors.E200.format(name=name, line=e.lineno, error=e.message)
            ) from e
        self._template.name = name  # tracebacks then carry the template's name

    @classmethod
    def load(
        cls, template: str, template_path: Optional[Union[str, Path]] = None
    ) -> PromptTemplate:
        if template_path is None:
            return cls(template, name="'template' (inline in the config)")
        path = Path(template_path)
        if not path.exists():
            raise TemplateError(Errors.E201.format(path=str(path)))
        return cls(read_template_file(path), name=repr(str(path)))

    def render(self, **context: Any) -> str:
        try:
            return render_budgeted(self._template, context)
        except BudgetExceeded as e:
            raise TemplateError(
                Errors.E613.format(
                    name=self.name, reason=e, seconds=TEMPLATE_SECONDS, chars=TEMPLATE_CHARS
                )
            ) from None
        except Exception as e:  # Jinja's own errors, and Python's ({{ 1/0 }}, {{ x + 1 }})
            line = _template_line(e, self.name)
            where = f" at line {line}" if line is not None else ""
            raise TemplateError(
                Errors.E202.format(
                    name=self.name,
                    where=where,
                    error=f"{type(e).__name__}: {e}",
                    variables=sorted(context),
                )
            ) from e

    def render_doc(self, doc: DocLike, **extra: Any) -> str:
        return self.render(**doc_context(doc), **extra)


def read_template_file(path: Path) -> str:
    """The template's text; a file that is not UTF-8 is reported with its line."""
    try:
        raw = path.read_bytes()
    except OSError as e:  # a folder, no permission
        raise TemplateError(Errors.E204.format(path=str(path), error=e)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TemplateError(Errors.E203.format(path=str(path), line=line, byte=e.start)) from None


def _template_line(error: BaseException, name: str) -> Optional[int]:
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == name or frame.filename == "<template>":
            line = frame.lineno
    return line


def doc_context(doc: DocLike) -> Dict[str, Any]:
    """The variables a template sees: text, sentences, tokens and entities."""
    base = doc.start_char if isinstance(doc, Span) else 0
    real = doc.doc if isinstance(doc, Span) else doc
    tokens: List[Dict[str, Any]] = [
        {
            "i": t.i - (doc.start if isinstance(doc, Span) else 0),
            "text": t.text,
            "idx": t.idx - base,
            "whitespace_": t.whitespace_,
            "pos_": t.pos_,
            "tag_": t.tag_,
            "lemma_": t.lemma_,
            "dep_": t.dep_,
            "ent_type_": t.ent_type_,
            "ent_iob_": t.ent_iob_,
            "is_sent_start": bool(t.is_sent_start),
        }
        for t in doc
    ]
    ents = [
        {
            "text": e.text,
            "label_": e.label_,
            "start_char": e.start_char - base,
            "end_char": e.end_char - base,
            "start": e.start - (doc.start if isinstance(doc, Span) else 0),
            "end": e.end - (doc.start if isinstance(doc, Span) else 0),
        }
        for e in doc.ents
    ]
    sents = _sentences(doc, base) if real.has_annotation("SENT_START") else []
    if not sents and len(doc):
        sents = [{"text": doc.text, "start_char": 0, "end_char": len(doc.text)}]
    return {"text": doc.text, "tokens": tokens, "ents": ents, "sents": sents}


def _sentences(doc: DocLike, base: int) -> List[Dict[str, Any]]:
    """Sentences clipped to ``doc`` (a Span may start mid-sentence)."""
    tokens = list(doc)
    starts = [k for k, t in enumerate(tokens) if k == 0 or t.is_sent_start]
    out = []
    for a, b in zip(starts, starts[1:] + [len(tokens)]):
        span = tokens[a].doc[tokens[a].i : tokens[b - 1].i + 1]
        out.append(
            {
                "text": span.text,
                "start_char": span.start_char - base,
                "end_char": span.end_char - base,
            }
        )
    return out


def load_template(template: Optional[str], template_path: Optional[str], default: str) -> Any:
    """An inline template, a template file, or the packaged default ``templates/<default>``;
    not both an inline template and a file."""
    check_one_template(template, template_path)
    if template is not None:
        return PromptTemplate.load(template, template_path)
    return PromptTemplate.load("", template_path or str(TEMPLATES / default))


def check_one_template(
    template: Optional[str], template_path: Optional[str], *, defaults: Sequence[str] = ()
) -> None:
    """A config that sets ``template`` and ``template_path`` is refused (E803): the file
    used to win silently. A template in ``defaults`` (a function's default, which spaCy
    merges into a task block that only names a file) is no choice of the user's."""
    if template is not None and template_path is not None and template not in defaults:
        raise TemplateError(Errors.E803.format(path=str(template_path), template=template[:60]))


def content_free_doc(vocab: Any, text: str) -> Doc:
    """A doc of ``text`` (e.g. "N/A") for contextual calibration, without trailing space."""
    words = text.split() or ["N/A"]
    return Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
