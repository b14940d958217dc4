"""The distillation run: five steps, each recorded in ``OUTPUT_DIR/distill.json`` when it
has finished, so a run started again after a kill goes on from the first unfinished step
(the teacher's annotation resumes inside itself: no document is annotated twice). A run
with other settings than the recorded ones is refused; a new ``--corrections`` file redoes
the steps from the training data on.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import spacy
from spacy.tokens import Doc

from ..batch.files import write_atomic
from ..errors import DistillError, Errors
from . import data as data_step
from .corrections import apply_corrections, file_digest, read_corrections
from .data import write_docbin
from .predictions import Prediction, from_json, prediction, to_json
from .report import (
    METRICS,
    calibration,
    no_calibration,
    render_examples,
    render_html,
    report_json,
    scores,
)
from .review import select_queue, write_queue
from .student import folder_size, student_config, train_student, write_config
from .teacher import Teacher, annotate_corpus, inspect_teacher, teacher_docs, write_texts

STATE = "distill.json"
SETTINGS = ("teacher", "input", "student", "gold", "review_fraction", "dev_fraction", "overrides")


@dataclass
class DistillOptions:
    teacher: Path
    input: Path
    output_dir: Path
    student: str
    gold: Optional[Path] = None
    review_fraction: float = 0.2
    corrections: Optional[Path] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    dev_fraction: float = 0.2
    max_steps: int = 2000
    eval_frequency: int = 100
    curve: Tuple[float, ...] = (0.25, 0.5)
    batch_size: Optional[int] = None
    # a ner student starts from the teacher pipeline's NER (student.cfg is written once)
    warm_start: bool = True
    quiet: bool = False

    def settings(self) -> Dict[str, Any]:
        return {
            "teacher": str(self.teacher),
            "input": str(self.input),
            "student": self.student,
            "gold": None if self.gold is None else str(self.gold),
            "review_fraction": self.review_fraction,
            "dev_fraction": self.dev_fraction,
            "overrides": {k: v for k, v in sorted(self.overrides.items())},
        }


class State:
    """``distill.json``: the settings and, per finished step, what it measured."""

    def __init__(self, folder: Path, settings: Dict[str, Any]) -> None:
        self.path = folder / STATE
        self.data: Dict[str, Any] = {"settings": settings, "done": {}}
        if self.path.exists():
            old = json.loads(self.path.read_text(encoding="utf-8"))
            changed = [k for k in SETTINGS if old.get("settings", {}).get(k) != settings.get(k)]
            if changed:
                raise DistillError(Errors.E707.format(path=folder, changed=", ".join(changed)))
            self.data = old

    def done(self, step: str) -> Optional[Dict[str, Any]]:
        return self.data["done"].get(step)

    def finish(self, step: str, info: Optional[Dict[str, Any]] = None) -> None:
        self.data["done"][step] = info or {}
        self._save()

    def forget(self, *steps: str) -> None:
        for step in steps:
            self.data["done"].pop(step, None)
        self._save()

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2).encode("utf-8"))


def say(opts: DistillOptions, text: str) -> None:
    if not opts.quiet:
        print(f"[spacy-llama] distill: {text}", file=sys.stderr)


def distill(opts: DistillOptions) -> Dict[str, Any]:
    if not 0.0 <= opts.review_fraction <= 1.0:
        raise DistillError(Errors.E711.format(value=opts.review_fraction))
    teacher = inspect_teacher(opts.teacher, opts.overrides, opts.student)
    out = opts.output_dir
    out.mkdir(parents=True, exist_ok=True)
    state = State(out, opts.settings())
    preds = step_teacher(opts, teacher, state)
    gold_preds = step_teacher_gold(opts, teacher, state)
    queue = step_review(opts, teacher, state, preds)
    train, dev = step_data(opts, teacher, state, preds, queue)
    best = step_student(opts, teacher, state)
    curve = step_curve(opts, teacher, state, train, dev)
    return step_report(opts, teacher, state, preds, gold_preds, dev, best, curve)


# -- 1. teacher ------------------------------------------------------------------------------
def _annotate(
    opts: DistillOptions,
    teacher: Teacher,
    state: State,
    step: str,
    source: Path,
    name: str,
    *,
    cache: bool,
) -> List[Prediction]:
    out = opts.output_dir
    preds_path = out / f"{name}.predictions.jsonl"
    if state.done(step) and preds_path.exists():
        return _read_preds(preds_path)
    say(opts, f"step 1: the teacher annotates {source} -> {out / (name + '.jsonl')}")
    summary = annotate_corpus(
        opts.teacher, opts.overrides, source, out / f"{name}.jsonl",
        batch_size=opts.batch_size, quiet=opts.quiet, cache=cache,
    )  # fmt: skip
    vocab = spacy.blank("en").vocab
    preds = [prediction(doc, teacher) for doc in teacher_docs(out / f"{name}.jsonl", vocab)]
    write_atomic(preds_path, "".join(json.dumps(to_json(p)) + "\n" for p in preds).encode("utf-8"))
    secs = max(summary.seconds - summary.load_seconds, 1e-9)
    state.finish(
        step,
        {
            "docs": len(preds),
            "annotated": summary.done,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "docs_per_second": summary.done / secs if summary.done else None,
        },
    )
    return preds


def _read_preds(path: Path) -> List[Prediction]:
    return [
        from_json(json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]


def step_teacher(opts: DistillOptions, teacher: Teacher, state: State) -> List[Prediction]:
    return _annotate(opts, teacher, state, "teacher", opts.input, "annotations", cache=True)


def step_teacher_gold(
    opts: DistillOptions, teacher: Teacher, state: State
) -> Optional[List[Prediction]]:
    """The teacher on the gold texts (for the report; uncached, so its docs/s is real)."""
    if opts.gold is None:
        return None
    texts = opts.output_dir / "gold_texts.jsonl"
    if not texts.exists():
        golds = data_step.read_gold(opts.gold, teacher, opts.student)
        write_texts(golds, texts)
    return _annotate(opts, teacher, state, "teacher_gold", texts, "gold_annotations", cache=False)


# -- 2. review queue -------------------------------------------------------------------------
def step_review(
    opts: DistillOptions, teacher: Teacher, state: State, preds: List[Prediction]
) -> List[Prediction]:
    queue = select_queue(preds, teacher, opts.review_fraction)
    if not state.done("review"):
        say(
            opts, f"step 2: {len(queue)} least confident docs -> {opts.output_dir / 'review.jsonl'}"
        )
        write_queue(queue, teacher, opts.output_dir)
        state.finish("review", {"docs": len(queue), "ids": [p.id for p in queue]})
    return queue


# -- 3. training data ------------------------------------------------------------------------
def step_data(
    opts: DistillOptions,
    teacher: Teacher,
    state: State,
    preds: List[Prediction],
    queue: List[Prediction],
) -> Tuple[List[Doc], List[Doc]]:
    out = opts.output_dir
    digest = file_digest(opts.corrections) if opts.corrections is not None else None
    done = state.done("data")
    if done is not None and done.get("corrections") != digest:
        state.forget("data", "student", "curve", "report")  # new corrections: retrain
        done = None
    nlp = spacy.blank("en")
    if done is None:
        say(opts, "step 3: training data -> train.spacy, dev.spacy")
        corrected = read_corrections(opts.corrections, queue, teacher) if opts.corrections else {}
        labelled = apply_corrections(preds, corrected)
        if opts.gold is not None:
            if len(labelled) < data_step.MIN_TRAIN:
                raise DistillError(Errors.E706.format(n=len(labelled), need=data_step.MIN_TRAIN))
            train_preds = labelled
            golds = data_step.read_gold(opts.gold, teacher, opts.student)
            dev_docs = [data_step.gold_student_doc(g, teacher, opts.student) for g in golds]
        else:
            train_preds, dev_preds = data_step.split(labelled, opts.dev_fraction)
            dev_docs = data_step.training_docs(dev_preds, teacher, opts.student, nlp=nlp)
        train_docs = data_step.training_docs(train_preds, teacher, opts.student, nlp=nlp)
        write_docbin(train_docs, out / "train.spacy")
        write_docbin(dev_docs, out / "dev.spacy")
        state.finish(
            "data",
            {
                "train": len(train_docs),
                "dev": len(dev_docs),
                "corrected": len(corrected),
                "corrections": digest,
            },
        )
    from spacy.tokens import DocBin

    train = list(DocBin(store_user_data=True).from_disk(out / "train.spacy").get_docs(nlp.vocab))
    dev = list(DocBin(store_user_data=True).from_disk(out / "dev.spacy").get_docs(nlp.vocab))
    return train, dev


# -- 4. student ------------------------------------------------------------------------------
def _train(opts: DistillOptions, teacher: Teacher, train: Path, output: Path) -> Path:
    config = opts.output_dir / "student.cfg"
    if not config.exists():
        text = student_config(
            teacher,
            opts.student,
            max_steps=opts.max_steps,
            eval_frequency=opts.eval_frequency,
            warm_start=opts.warm_start,
        )
        write_config(text, config)
    return train_student(config, train, opts.output_dir / "dev.spacy", output)


def step_student(opts: DistillOptions, teacher: Teacher, state: State) -> Path:
    best = opts.output_dir / "student" / "model-best"
    done = state.done("student")
    if done is not None and Path(done["model"]).exists():
        return Path(done["model"])
    say(opts, f"step 4: spacy train -> {best}")
    model = _train(opts, teacher, opts.output_dir / "train.spacy", opts.output_dir / "student")
    state.finish("student", {"model": str(model)})
    return model


def step_curve(
    opts: DistillOptions, teacher: Teacher, state: State, train: List[Doc], dev: List[Doc]
) -> List[Dict[str, Any]]:
    """The student trained on a prefix of the training docs, for each ``curve`` share."""
    done = dict(state.done("curve") or {})
    for fraction in sorted(f for f in opts.curve if 0 < f < 1):
        key = f"{fraction:g}"
        if key in done:
            continue
        say(opts, f"step 4: learning curve, {100 * fraction:.0f}% of the teacher's labels")
        subset = data_step.curve_subset(train, fraction)
        path = opts.output_dir / "curve" / f"train-{key}.spacy"
        path.parent.mkdir(exist_ok=True)
        write_docbin(subset, path)
        model = _train(opts, teacher, path, opts.output_dir / "curve" / f"student-{key}")
        f = scores(_predict(model, dev), dev, teacher, opts.student)["f"]
        done[key] = {"fraction": fraction, "docs": len(subset), "f": f}
        state.finish("curve", done)
    return [done[k] for k in sorted(done, key=float)]


def _predict(model: Path, golds: Sequence[Doc]) -> List[Doc]:
    nlp = spacy.load(model)
    return list(nlp.pipe(g.text for g in golds))


def student_speed(
    model: Path, texts: Sequence[str], min_seconds: float = 1.0, *, only: Optional[str] = None
) -> float:
    """docs/s of the student over ``texts`` (repeated until ``min_seconds`` have passed);
    with ``only``, of that component alone (the others, e.g. sourced ones, not loaded)."""
    nlp = spacy.load(model, enable=[only]) if only else spacy.load(model)
    list(nlp.pipe(texts[:8]))  # warm up
    n, start = 0, time.perf_counter()
    while True:
        for _ in nlp.pipe(texts):
            n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or not texts:
            return n / max(elapsed, 1e-9)


# -- 5. report -------------------------------------------------------------------------------
def step_report(
    opts: DistillOptions,
    teacher: Teacher,
    state: State,
    preds: List[Prediction],
    gold_preds: Optional[List[Prediction]],
    dev: List[Doc],
    best: Path,
    curve: List[Dict[str, Any]],
) -> Dict[str, Any]:
    out = opts.output_dir
    if state.done("report") and (out / "report.json").exists():
        return json.loads((out / "report.json").read_text(encoding="utf-8"))
    say(opts, f"step 5: report -> {out / 'report.json'}, {out / 'report.html'}")
    nlp = spacy.blank("en")
    if gold_preds is not None:  # the teacher's labels of the gold texts, in gold order
        eval_name = str(opts.gold)
        by_id = {p.id: p for p in gold_preds}
        from ..batch.reader import ID_KEY

        ids = [str(g.user_data.get(ID_KEY, f"gold-{i}")) for i, g in enumerate(dev)]
        pairs = [(by_id[i], g) for i, g in zip(ids, dev) if i in by_id]
        t_preds, golds = [p for p, _ in pairs], [g for _, g in pairs]
        teacher_docs_ = data_step.training_docs(
            t_preds, teacher, opts.student, probabilities=True, nlp=nlp
        )
        teacher_scores = scores(teacher_docs_, golds, teacher, opts.student)
        cal: Dict[str, Any] = calibration(
            t_preds, golds, teacher, opts.student, opts.review_fraction
        )
        teacher_speed = (state.done("teacher_gold") or {}).get("docs_per_second")
    else:  # no gold: the dev slice is the teacher's own labels, so only the student is scored
        eval_name = "the dev slice of the teacher's labels"
        golds = dev
        teacher_scores = {"f": None, "metric": METRICS[opts.student], "per_label": {}}
        cal = no_calibration(opts.review_fraction)
        teacher_speed = None
    if teacher_speed is None:  # (a gold run resumed after all its docs were done)
        teacher_speed = (state.done("teacher") or {}).get("docs_per_second")
    student_scores = scores(_predict(best, golds), golds, teacher, opts.student)
    s_speed = student_speed(best, [g.text for g in golds])
    full = (state.done("data") or {}).get("train", 0)
    curve_points = curve + [{"fraction": 1.0, "docs": full, "f": student_scores["f"]}]
    ratio = None
    if teacher_scores["f"] and student_scores["f"] is not None:
        ratio = student_scores["f"] / teacher_scores["f"]
    report: Dict[str, Any] = {
        "settings": {**opts.settings(), "task": teacher.task_name},
        "teacher_task": teacher.to_json(),
        "eval_set": eval_name,
        "eval_docs": len(golds),
        "teacher": {"scores": teacher_scores, "docs_per_second": teacher_speed or 0.0},
        "student": {
            "scores": student_scores,
            "docs_per_second": s_speed,
            "size_bytes": folder_size(best),
            "model": str(best),
        },
        "score_ratio": ratio,
        "speedup": s_speed / teacher_speed if teacher_speed else None,
        "learning_curve": curve_points,
        "calibration": cal,
        "review_queue": {
            "docs": len(select_queue(preds, teacher, opts.review_fraction)),
            "of": len(preds),
        },
        "data": state.done("data"),
        "examples": render_examples(preds, teacher),
    }
    write_atomic(out / "report.json", report_json(report).encode("utf-8"))
    write_atomic(out / "report.html", render_html(report).encode("utf-8"))
    state.finish("report")
    return report
