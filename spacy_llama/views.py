"""HTML views of what the ``llama`` component adds to a Doc, drawn with displaCy.

:func:`render` puts one section per annotation the doc has:

- ``doc.cats``: a bar chart (one bar per label, its probability; the best one marked);
- entities: displaCy's ``ent`` view, each entity labelled with the reviewer's label and its
  probability where EntityReview scored it (``span._.llama_label`` / ``llama_scores``),
  with the full score table below;
- relations (REL.v1's ``doc._.llama_relations``): displaCy's ``dep`` view, one word per
  entity (and per token between them), one arc per relation from head to tail;
- span groups (Extract.v1's ``doc.spans["llama_extract"]``, NER.v2's, ...): displaCy's
  ``span`` view, one per group.

The attribute names are the defaults; a pipeline that renamed them passes its own. Nothing
is drawn for an annotation the doc does not have, so ``render`` works on any Doc.
``annotate --html OUT.html`` writes these views for the first documents of a run.
"""

from __future__ import annotations

import html
from typing import Any, Dict, Iterable, List, Optional, Sequence

from spacy import displacy
from spacy.tokens import Doc, Span

SAMPLE_DOCS = 20  # what annotate --html draws: the first documents of the run

_BAR = (
    '<div style="display:flex;align-items:center;margin:2px 0;font-size:14px">'
    '<span style="width:14em;text-align:right;padding-right:0.6em">{label}</span>'
    '<span style="display:inline-block;height:1.1em;width:{width:.1f}%;max-width:30em;'
    'background:{color}"></span><span style="padding-left:0.5em">{value:.3f}</span></div>'
)


def render(
    doc: Doc,
    *,
    label_attr: str = "llama_label",
    scores_attr: str = "llama_scores",
    relations_attr: str = "llama_relations",
    spans_keys: Optional[Sequence[str]] = None,
    page: bool = False,
) -> str:
    """The HTML of every view ``doc`` has (see the module doc); ``page``: a whole page."""
    parts = [
        cats_html(doc),
        entities_html(doc, label_attr=label_attr, scores_attr=scores_attr),
        relations_html(doc, relations_attr=relations_attr),
        spans_html(doc, keys=spans_keys),
    ]
    body = "\n".join(p for p in parts if p) or "<p><em>nothing to show</em></p>"
    body = f'<section class="spacy-llama-doc">\n{body}\n</section>'
    return wrap_page([body]) if page else body


def render_docs(docs: Iterable[Doc], **options: Any) -> str:
    """One page with the views of each doc, separated by a rule."""
    return wrap_page([render(doc, **options) for doc in docs])


def wrap_page(sections: List[str]) -> str:
    body = "\n<hr>\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>spacy-llama</title></head>\n"
        f'<body style="font-family:sans-serif;margin:1.5em">\n{body}\n</body></html>\n'
    )


def cats_html(doc: Doc) -> str:
    """``doc.cats`` as horizontal bars, highest first (probabilities in [0, 1])."""
    if not doc.cats:
        return ""
    best = max(doc.cats, key=lambda k: doc.cats[k])
    rows = [
        _BAR.format(
            label=html.escape(label),
            width=100 * max(0.0, min(1.0, float(value))),
            color="#3b7dd8" if label == best else "#a9c4ec",
            value=float(value),
        )
        for label, value in sorted(doc.cats.items(), key=lambda kv: -kv[1])
    ]
    return "<h4>doc.cats</h4>\n" + "\n".join(rows)


def entities_html(doc: Doc, *, label_attr: str, scores_attr: str) -> str:
    """displaCy's entity view; a reviewed entity shows ``LABEL → reviewer p`` and a table."""
    if not doc.ents:
        return ""
    ents: List[Dict[str, Any]] = []
    table: List[str] = []
    for ent in doc.ents:
        reviewed = _get(ent, label_attr)
        scores = _get(ent, scores_attr) or {}
        label = ent.label_
        if reviewed is not None:
            prob = scores.get(reviewed)
            shown = f" {prob:.2f}" if isinstance(prob, (int, float)) else ""
            label = ent.label_ if reviewed == ent.label_ else f"{ent.label_} → {reviewed}"
            label += shown
            cells = ", ".join(
                f"{html.escape(str(k))} {float(v):.2f}"
                for k, v in sorted(scores.items(), key=lambda kv: -kv[1])
            )
            table.append(
                f"<tr><td>{html.escape(ent.text)}</td><td>{html.escape(ent.label_)}</td>"
                f"<td>{html.escape(str(reviewed))}</td><td>{cells}</td></tr>"
            )
        ents.append({"start": ent.start_char, "end": ent.end_char, "label": label})
    data = {"text": doc.text, "ents": ents, "title": None}
    colors = {e["label"]: _ent_color(e["label"]) for e in ents}
    out = "<h4>entities</h4>\n" + displacy.render(
        data, style="ent", manual=True, page=False, jupyter=False, options={"colors": colors}
    )
    if table:
        out += (
            '\n<table style="font-size:13px;border-collapse:collapse" border="1" '
            'cellpadding="3"><tr><th>entity</th><th>label</th><th>review</th>'
            "<th>scores</th></tr>\n" + "\n".join(table) + "\n</table>"
        )
    return out


def relations_html(doc: Doc, *, relations_attr: str) -> str:
    """REL.v1's relations as arcs over the text, each entity one word (its label as tag)."""
    relations = _doc_get(doc, relations_attr)
    if not relations or not doc.ents:
        return ""
    ents = list(doc.ents)
    words: List[Dict[str, str]] = []
    word_of_ent: Dict[int, int] = {}
    i = 0
    while i < len(doc):
        k = next((n for n, e in enumerate(ents) if e.start == i), None)
        if k is not None:
            word_of_ent[k] = len(words)
            words.append({"text": ents[k].text, "tag": ents[k].label_})
            i = ents[k].end
        else:
            words.append({"text": doc[i].text, "tag": ""})
            i += 1
    arcs = []
    for rel in relations:
        head, tail = word_of_ent.get(rel.get("head")), word_of_ent.get(rel.get("tail"))
        if head is None or tail is None or head == tail:
            continue
        start, end = sorted((head, tail))
        arcs.append(
            {
                "start": start,
                "end": end,
                "label": str(rel.get("relation", "")),
                "dir": "right" if head < tail else "left",
            }
        )
    if not arcs:
        return ""
    data = {"words": words, "arcs": arcs}
    svg = displacy.render(
        data, style="dep", manual=True, page=False, jupyter=False,
        options={"compact": True, "distance": 110},
    )
    return "<h4>relations</h4>\n" + svg


def spans_html(doc: Doc, *, keys: Optional[Sequence[str]] = None) -> str:
    """displaCy's span view of each span group (Extract's fields, NER.v2's spans...)."""
    names = list(doc.spans.keys()) if keys is None else [k for k in keys if k in doc.spans]
    out = []
    for key in names:
        group = list(doc.spans[key])
        if not group:
            continue
        svg = displacy.render(
            doc, style="span", page=False, jupyter=False, options={"spans_key": key}
        )
        out.append(f"<h4>doc.spans[{html.escape(repr(key))}]</h4>\n{svg}")
    return "\n".join(out)


def _get(span: Span, attr: str) -> Any:
    return span._.get(attr) if Span.has_extension(attr) else None


def _doc_get(doc: Doc, attr: str) -> Any:
    return doc._.get(attr) if Doc.has_extension(attr) else None


def _ent_color(label: str) -> str:
    """A stable pale colour per label text (displaCy greys out labels it does not know)."""
    palette = ["#aa9cfc", "#feca74", "#7aecec", "#bfeeb7", "#e4e7d2", "#ff9561", "#c887fb"]
    base = label.split(" ", 1)[0]
    return palette[sum(base.encode("utf8")) % len(palette)]
