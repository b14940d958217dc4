"""Step 3: the student's training data. Each (corrected) teacher prediction becomes a blank
English Doc with the student's annotation: ``doc.cats`` (the chosen labels as 1.0/0.0: spaCy's
textcat components train on 0/1 values only, so the teacher's probabilities are kept only to
score the teacher; trained on them as soft targets with that check switched off, the student
scored no better on the gold dev split, macro-F 0.79 against 0.88, benchmarks/DISTILL.md),
``doc.ents`` (ner) or ``doc.spans["sc"]`` (spancat). The dev set is the ``--gold`` set when
given (its annotation restricted to the task's labels), else a held-out slice of the
teacher's labels, chosen by a hash of the id so a resumed or re-run step picks the same
documents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import filter_spans

from ..batch.files import write_atomic
from ..batch.reader import ID_KEY
from ..errors import DistillError, Errors
from .predictions import Prediction, chosen_cats
from .teacher import Teacher

SPANS_KEY = "sc"  # spancat's default spans_key
MIN_DEV, MIN_TRAIN = 1, 1


def student_doc(
    nlp: Language, pred: Prediction, teacher: Teacher, student: str, *, probabilities: bool = False
) -> Doc:
    doc = nlp.make_doc(pred.text)
    doc.user_data[ID_KEY] = pred.id
    if student == "textcat":
        if probabilities:  # the teacher's own scores (to score it): spaCy trains on 0/1 only
            doc.cats = {k: float(pred.cats.get(k, 0.0)) for k in teacher.labels}
        else:
            chosen = set(chosen_cats(pred.cats, exclusive=teacher.exclusive))
            doc.cats = {k: float(k in chosen) for k in teacher.labels}
        return doc
    spans = []
    for start, end, label, _ in pred.spans:
        span = doc.char_span(start, end, label=label, alignment_mode="expand")
        if span is not None:
            spans.append(span)
    if student == "ner":
        doc.ents = filter_spans(spans)
    else:
        doc.spans[SPANS_KEY] = spans
    return doc


def gold_student_doc(gold: Doc, teacher: Teacher, student: str) -> Doc:
    """A gold doc with only what the student learns: the task's labels."""
    doc = Doc(gold.vocab, words=[t.text for t in gold], spaces=[bool(t.whitespace_) for t in gold])
    doc.user_data[ID_KEY] = gold.user_data.get(ID_KEY) if gold.user_data else None
    wanted = set(teacher.labels)
    if student == "textcat":
        doc.cats = {k: float(gold.cats.get(k, 0.0)) for k in teacher.labels}
        return doc
    source = (
        list(gold.spans[teacher.spans_key]) if teacher.spans_key in gold.spans else list(gold.ents)
    )
    found = [
        doc.char_span(s.start_char, s.end_char, label=s.label_)
        for s in source
        if s.label_ in wanted
    ]
    spans = [s for s in found if s is not None]
    if student == "ner":
        doc.ents = filter_spans(spans)
    else:
        doc.spans[SPANS_KEY] = spans
    return doc


def read_gold(path: Path, teacher: Teacher, student: str) -> List[Doc]:
    nlp = spacy.blank("en")
    golds = list(DocBin(store_user_data=True).from_disk(path).get_docs(nlp.vocab))
    if student == "textcat" and not any(g.cats for g in golds):
        raise DistillError(Errors.E709.format(path=path, what="doc.cats", student=student))
    if student != "textcat" and not any(len(g.ents) or len(g.spans) for g in golds):
        raise DistillError(Errors.E709.format(path=path, what="entity (doc.ents)", student=student))
    return golds


def held_out(doc_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(
    preds: Sequence[Prediction], dev_fraction: float
) -> Tuple[List[Prediction], List[Prediction]]:
    """(train, dev) by a hash of the id; at least one of each, else a clear error."""
    need = MIN_DEV + MIN_TRAIN
    if len(preds) < need:
        raise DistillError(Errors.E706.format(n=len(preds), need=need))
    dev = [p for p in preds if held_out(p.id, dev_fraction)]
    train = [p for p in preds if not held_out(p.id, dev_fraction)]
    if not dev:  # a small corpus whose hashes all fell on one side
        dev, train = train[-1:], train[:-1]
    elif not train:
        train, dev = dev[:1], dev[1:]
    return train, dev


def write_docbin(docs: Iterable[Doc], path: Path) -> int:
    docbin = DocBin(store_user_data=True)
    n = 0
    for doc in docs:
        docbin.add(doc)
        n += 1
    write_atomic(path, docbin.to_bytes())
    return n


def curve_subset(train: Sequence[Doc], fraction: float) -> List[Doc]:
    """The first ``fraction`` of the training docs (at least one): the learning curve's
    smaller training sets are prefixes of the full one."""
    return list(train[: max(1, round(fraction * len(train)))])


def training_docs(
    preds: Sequence[Prediction],
    teacher: Teacher,
    student: str,
    *,
    probabilities: bool = False,
    nlp: Optional[Language] = None,
) -> List[Doc]:
    nlp = nlp or spacy.blank("en")
    return [student_doc(nlp, p, teacher, student, probabilities=probabilities) for p in preds]
