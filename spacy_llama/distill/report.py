"""Step 5: the report. ``report.json`` (every number) and a self-contained ``report.html``
(inline SVG charts and displaCy markup, no script, nothing fetched):

- teacher vs student on the evaluation set (``--gold``, else the dev slice), per label and
  overall, scored by spaCy's own scorers on the student's annotation (cats / ents / spans);
- each model's docs/s measured in the run, and the student's size on disk;
- the learning curve: student score against the share of teacher-labelled docs;
- the teacher's calibration on the evaluation set: a reliability diagram (confidence bins
  against accuracy: per document for textcat, per span for entities) and the teacher's error
  rate inside the review queue (its least confident documents) against outside it;
- displaCy renderings of the least and the most confident documents of the input.
"""

from __future__ import annotations

import html
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy import displacy
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example

from .data import SPANS_KEY
from .predictions import Prediction, chosen_cats
from .review import select_queue
from .teacher import Teacher

BINS = 10
METRICS = {"textcat": "macro F (cats)", "ner": "entity F", "spancat": "span F"}


def no_calibration(fraction: float) -> Dict[str, Any]:
    """Without a gold set nothing says which teacher labels are wrong."""
    queue = {
        "fraction": fraction,
        "docs_in": 0,
        "docs_out": 0,
        "error_rate_in": None,
        "error_rate_out": None,
        "ratio": None,
    }
    return {"unit": "-", "bins": [], "ece": 0.0, "n": 0, "queue": queue}


def scores(
    predicted: Sequence[Doc], gold: Sequence[Doc], teacher: Teacher, student: str
) -> Dict[str, Any]:
    """Overall F and P/R/F per label of ``predicted`` against ``gold`` (student annotation)."""
    for p, g in zip(predicted, gold):  # labels only the prediction knows (e.g. a warm-started
        for span in [*p.ents, *(p.spans[SPANS_KEY] if SPANS_KEY in p.spans else [])]:
            g.vocab.strings.add(span.label_)  # NER's NORP) are scored as wrong, not a crash
    examples = [Example(p, g) for p, g in zip(predicted, gold)]
    if student == "textcat":
        got = Scorer.score_cats(
            examples, "cats", labels=teacher.labels, multi_label=not teacher.exclusive
        )
        per = got.get("cats_f_per_type") or {}
        return {"f": got.get("cats_macro_f"), "metric": METRICS["textcat"], "per_label": per}
    if student == "ner":
        got = Scorer.score_spans(examples, "ents")
        return {
            "f": got.get("ents_f"),
            "p": got.get("ents_p"),
            "r": got.get("ents_r"),
            "metric": METRICS["ner"],
            "per_label": got.get("ents_per_type") or {},
        }
    attr = f"spans_{SPANS_KEY}"
    got = Scorer.score_spans(
        examples,
        attr,
        getter=lambda doc, _: list(doc.spans[SPANS_KEY]) if SPANS_KEY in doc.spans else [],
        has_annotation=lambda doc: True,
    )
    return {
        "f": got.get(f"{attr}_f"),
        "p": got.get(f"{attr}_p"),
        "r": got.get(f"{attr}_r"),
        "metric": METRICS["spancat"],
        "per_label": got.get(f"{attr}_per_type") or {},
    }


def gold_labels(gold: Doc, teacher: Teacher, student: str) -> set:
    if student == "textcat":
        return {k for k, v in gold.cats.items() if v >= 0.5}
    spans = (
        list(gold.spans[SPANS_KEY])
        if student == "spancat" and SPANS_KEY in gold.spans
        else list(gold.ents)
    )
    return {(s.start_char, s.end_char, s.label_) for s in spans}


def predicted_labels(pred: Prediction, teacher: Teacher) -> set:
    if teacher.kind == "textcat":
        return set(chosen_cats(pred.cats, exclusive=teacher.exclusive))
    return {(a, b, c) for a, b, c, _ in pred.spans}


def calibration(
    preds: Sequence[Prediction],
    golds: Sequence[Doc],
    teacher: Teacher,
    student: str,
    fraction: float,
) -> Dict[str, Any]:
    """The reliability diagram's bins and the error rate inside / outside the review queue,
    of the teacher's predictions on the evaluation set."""
    items: List[Tuple[float, bool]] = []  # (confidence, correct)
    wrong: Dict[str, bool] = {}
    # span tasks: (wrong or missed spans, all predicted or gold spans) per doc; nearly every
    # doc of a weak NER teacher has some error, so the doc-level rate says little there
    span_errors: Dict[str, Tuple[int, int]] = {}
    for pred, gold in zip(preds, golds):
        want = gold_labels(gold, teacher, student)
        got = predicted_labels(pred, teacher)
        wrong[pred.id] = got != want
        span_errors[pred.id] = (len(got ^ want), len(got | want))
        if teacher.kind == "textcat":
            if pred.cats:
                top = max(pred.cats, key=lambda k: pred.cats[k])
                items.append((pred.cats[top], top in want if teacher.exclusive else got == want))
        else:
            items += [(s[3], (s[0], s[1], s[2]) in want) for s in pred.spans if s[3] is not None]
    bins = []
    for k in range(BINS):
        lo, hi = k / BINS, (k + 1) / BINS
        inside = [(c, ok) for c, ok in items if lo <= c < hi or (k == BINS - 1 and c == 1.0)]
        if inside:
            bins.append(
                {
                    "lo": lo,
                    "hi": hi,
                    "n": len(inside),
                    "confidence": sum(c for c, _ in inside) / len(inside),
                    "accuracy": sum(ok for _, ok in inside) / len(inside),
                }
            )
    ece = sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in bins) / max(1, len(items))
    queue_ids = {p.id for p in select_queue(preds, teacher, fraction)}
    in_q = [wrong[i] for i in wrong if i in queue_ids]
    out_q = [wrong[i] for i in wrong if i not in queue_ids]
    rate_in = sum(in_q) / len(in_q) if in_q else None
    rate_out = sum(out_q) / len(out_q) if out_q else None
    ratio = rate_in / rate_out if rate_in is not None and rate_out else None
    queue: Dict[str, Any] = {
        "fraction": fraction,
        "docs_in": len(in_q),
        "docs_out": len(out_q),
        "error_rate_in": rate_in,
        "error_rate_out": rate_out,
        "ratio": ratio,
    }
    if teacher.kind != "textcat":
        span_in = _span_error_rate([span_errors[i] for i in span_errors if i in queue_ids])
        span_out = _span_error_rate([span_errors[i] for i in span_errors if i not in queue_ids])
        queue["span_error_rate_in"] = span_in
        queue["span_error_rate_out"] = span_out
        queue["span_ratio"] = span_in / span_out if span_in is not None and span_out else None
    return {
        "unit": "document" if teacher.kind == "textcat" else "span",
        "bins": bins,
        "ece": ece,
        "n": len(items),
        "queue": queue,
    }


def _span_error_rate(counts: Sequence[Tuple[int, int]]) -> Optional[float]:
    """Wrong or missed spans over all predicted or gold spans (1 - the Jaccard overlap)."""
    total = sum(n for _, n in counts)
    return sum(e for e, _ in counts) / total if total else None


def render_examples(
    preds: Sequence[Prediction], teacher: Teacher, k: int = 3
) -> Dict[str, List[str]]:
    """displaCy markup of the ``k`` least and ``k`` most confident documents."""
    ranked = sorted(preds, key=lambda p: (p.confidence, p.id))
    return {
        "least": [_render(p, teacher) for p in ranked[:k]],
        "most": [_render(p, teacher) for p in ranked[::-1][:k]],
    }


def _render(pred: Prediction, teacher: Teacher) -> str:
    title = f"{pred.id} (confidence {pred.confidence:.2f})"
    if teacher.kind == "textcat":
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td><div class='bar' "
            f"style='width:{100 * p:.0f}px'></div></td><td>{p:.2f}</td></tr>"
            for label, p in sorted(pred.cats.items(), key=lambda kv: -kv[1])
        )
        head = f"<h4>{html.escape(title)}</h4><p>{html.escape(pred.text)}</p>"
        return f"<div class='doc'>{head}<table>{rows}</table></div>"
    ents = [
        {"start": a, "end": b, "label": f"{c} {s:.2f}" if s is not None else c}
        for a, b, c, s in pred.spans
    ]
    markup = displacy.render(
        {"text": pred.text, "ents": ents, "title": title},
        style="ent",
        manual=True,
        page=False,
        jupyter=False,
    )
    return f"<div class='doc'>{markup}</div>"


# -- HTML ----------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse}
table.t td,table.t th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
table.t td:first-child,table.t th:first-child{text-align:left}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#f5f7fa;border-radius:8px;padding:.8em 1.2em}
.card b{display:block;font-size:1.5em}.bar{background:#4a7bd0;height:10px}.doc{margin:1em 0}
"""


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _bars(per_teacher: Dict[str, Any], per_student: Dict[str, Any]) -> str:
    labels = sorted(set(per_teacher) | set(per_student))
    w, row = 560, 34
    h = row * len(labels) + 30
    out = [
        f"<svg width='{w + 200}' height='{h}' xmlns='http://www.w3.org/2000/svg' font-size='12'>"
    ]
    for k, label in enumerate(labels):
        y = 20 + k * row
        out.append(f"<text x='0' y='{y + 12}'>{html.escape(label)}</text>")
        for j, (per, color) in enumerate(((per_teacher, "#e08a3c"), (per_student, "#4a7bd0"))):
            f = float((per.get(label) or {}).get("f", 0.0) or 0.0)
            out.append(
                f"<rect x='150' y='{y + j * 13}' width='{w * f:.1f}' height='11' fill='{color}'/>"
            )
            out.append(f"<text x='{155 + w * f:.1f}' y='{y + j * 13 + 10}'>{100 * f:.0f}</text>")
    out.append(
        "<rect x='150' y='2' width='10' height='10' fill='#e08a3c'/><text x='164' "
        "y='11'>teacher</text>"
    )
    out.append(
        "<rect x='230' y='2' width='10' height='10' fill='#4a7bd0'/><text x='244' "
        "y='11'>student</text></svg>"
    )
    return "".join(out)


def _plot(
    points: List[Tuple[float, float]],
    *,
    xlabel: str,
    ylabel: str,
    diagonal: bool = False,
    sizes: Optional[List[int]] = None,
) -> str:
    w, h, m = 360, 260, 40

    def x(v: float) -> float:
        return m + v * (w - 2 * m)

    def y(v: float) -> float:
        return h - m - v * (h - 2 * m)

    out = [f"<svg width='{w}' height='{h}' xmlns='http://www.w3.org/2000/svg' font-size='11'>"]
    out.append(
        f"<rect x='{m}' y='{m}' width='{w - 2 * m}' height='{h - 2 * m}' fill='none' "
        "stroke='#bbb'/>"
    )
    if diagonal:
        out.append(
            f"<line x1='{x(0)}' y1='{y(0)}' x2='{x(1)}' y2='{y(1)}' stroke='#aaa' "
            "stroke-dasharray='4'/>"
        )
    if len(points) > 1:
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
        out.append(f"<polyline points='{path}' fill='none' stroke='#4a7bd0' stroke-width='2'/>")
    for k, (a, b) in enumerate(points):
        r = 3 + (min(8, (sizes[k] ** 0.5)) if sizes else 0)
        out.append(
            f"<circle cx='{x(a):.1f}' cy='{y(b):.1f}' r='{r:.1f}' fill='#4a7bd0' "
            "fill-opacity='.7'/>"
        )
    for v in (0, 0.5, 1):
        out.append(
            f"<text x='{x(v) - 6:.1f}' y='{h - m + 14}'>{v:g}</text><text x='{m - 24}' "
            f"y='{y(v) + 4:.1f}'>{v:g}</text>"
        )
    out.append(f"<text x='{w / 2 - 40}' y='{h - 6}'>{html.escape(xlabel)}</text>")
    out.append(f"<text x='4' y='{m - 12}'>{html.escape(ylabel)}</text></svg>")
    return "".join(out)


def render_html(report: Dict[str, Any]) -> str:
    t, s = report["teacher"], report["student"]
    cal, curve = report["calibration"], report["learning_curve"]
    q = cal["queue"]
    ratio = "-" if q["ratio"] is None else f"{q['ratio']:.1f}x"
    speedup = report.get("speedup")
    cards = [
        ("teacher " + t["scores"]["metric"], _pct(t["scores"]["f"])),
        ("student " + s["scores"]["metric"], _pct(s["scores"]["f"])),
        (
            "student / teacher score",
            "-" if report.get("score_ratio") is None else f"{report['score_ratio']:.2f}",
        ),
        ("student speed-up", "-" if speedup is None else f"{speedup:.0f}x"),
        ("student size", f"{s['size_bytes'] / 1e6:.1f} MB"),
        ("errors: queue vs rest", ratio),
    ]
    per_t, per_s = t["scores"]["per_label"], s["scores"]["per_label"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_pct((per_t.get(k) or {}).get('f'))}</td>"
        f"<td>{_pct((per_s.get(k) or {}).get('f'))}</td></tr>"
        for k in sorted(set(per_t) | set(per_s))
    )
    curve_pts = [(c["fraction"], float(c["f"] or 0.0)) for c in curve]
    rel_pts = [(b["confidence"], b["accuracy"]) for b in cal["bins"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>spacy-llama distill "
        "report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>From {html.escape(report['settings']['task'])} to a "
        f"{html.escape(report['settings']['student'])} student</h1>",
        f"<p>Evaluated on {html.escape(report['eval_set'])} ({report['eval_docs']} docs). "
        f"Teacher: {html.escape(report['settings']['teacher'])}.</p>",
        "<div class='cards'>"
        + "".join(f"<div class='card'>{html.escape(a)}<b>{b}</b></div>" for a, b in cards)
        + "</div>",
        "<h2>Teacher vs student, per label (F)</h2>",
        _bars(per_t, per_s),
        f"<table class='t'><tr><th>label</th><th>teacher F</th><th>student F</th></tr>{rows}",
        f"<tr><th>overall</th><th>{_pct(t['scores']['f'])}</th><th>{_pct(s['scores']['f'])}</th>"
        "</tr></table>",
        "<h2>Speed and size</h2>",
        f"<table class='t'><tr><td>teacher</td><td>{t['docs_per_second']:.2f} docs/s</td></tr>"
        f"<tr><td>student</td><td>{s['docs_per_second']:.1f} docs/s</td></tr>"
        f"<tr><td>student size</td><td>{s['size_bytes'] / 1e6:.2f} MB</td></tr></table>",
        "<h2>Learning curve</h2>",
        _plot(curve_pts, xlabel="share of teacher-labelled docs", ylabel="student F"),
        "<h2>Teacher calibration</h2>",
        f"<p>Reliability per {cal['unit']} ({cal['n']} predictions; ECE {cal['ece']:.3f}). "
        f"Error rate in the review queue (least confident {100 * q['fraction']:.0f}%): "
        f"{_pct(q['error_rate_in'])}% "
        f"vs {_pct(q['error_rate_out'])}% outside it ({ratio})"
        + (
            f"; of the spans, {_pct(q['span_error_rate_in'])}% wrong or missed in the queue vs "
            f"{_pct(q['span_error_rate_out'])}% outside it"
            if "span_error_rate_in" in q
            else ""
        )
        + ".</p>",
        _plot(
            rel_pts,
            xlabel="confidence",
            ylabel="accuracy",
            diagonal=True,
            sizes=[b["n"] for b in cal["bins"]],
        ),
        "<h2>Least confident documents</h2>",
        *report["examples"]["least"],
        "<h2>Most confident documents</h2>",
        *report["examples"]["most"],
        "</body></html>",
    ]
    return "\n".join(parts)


def report_json(report: Dict[str, Any]) -> str:
    data = {k: v for k, v in report.items() if k != "examples"}
    return json.dumps(data, indent=2, ensure_ascii=False)
