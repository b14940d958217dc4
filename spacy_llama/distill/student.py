"""Step 4: the student. A spaCy CPU config for one small component: ``textcat`` or
``textcat_multilabel`` (a bag of words: on the gold dev split, 17 docs, trained on 134
teacher-labelled docs, unigrams scored macro-F 0.88 in each of 3 seeds against 0.75-0.89
for unigrams + bigrams, 0.57 for the CNN ensemble and 0.56 for a CNN on en_core_web_sm's
frozen tok2vec; benchmarks/DISTILL.md), ``ner`` (the teacher pipeline's own NER, e.g.
en_core_web_sm's, trained on; a new one where it has none or with ``warm_start=False``) or
``spancat``, a new one with its own hash-embedding CNN (no listener, so it can sit beside
sourced components), English tokenization (the rules en_core_web_sm uses), and, where the
teacher pipeline has them, its other components (en_core_web_sm's tagger, parser, NER, ...)
sourced and frozen. It is trained with spaCy's ``train`` and saved as
``student/model-best``: a normal spaCy pipeline with no LLM in it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from ..batch.files import write_atomic
from ..errors import DistillError, Errors
from .data import SPANS_KEY
from .teacher import Teacher

TOK2VEC = """
[components.{name}.model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[components.{name}.model.tok2vec.embed]
@architectures = "spacy.MultiHashEmbed.v2"
width = {width}
attrs = ["NORM","PREFIX","SUFFIX","SHAPE"]
rows = [5000,1000,2500,2500]
include_static_vectors = false

[components.{name}.model.tok2vec.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = {width}
depth = 2
window_size = 1
maxout_pieces = 3
"""

COMPONENTS = {
    "textcat": """
[components.{name}]
factory = "{name}"
{threshold}

[components.{name}.model]
@architectures = "spacy.TextCatBOW.v3"
exclusive_classes = {exclusive}
length = 262144
ngram_size = 1
no_output_layer = false
nO = null
""",
    "ner": """
[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
extra_state_tokens = false
hidden_width = 64
maxout_pieces = 2
use_upper = true
nO = null
""",
    "spancat": """
[components.spancat]
factory = "spancat"
spans_key = "{spans_key}"
threshold = 0.5

[components.spancat.model]
@architectures = "spacy.SpanCategorizer.v1"

[components.spancat.model.reducer]
@layers = "spacy.mean_max_reducer.v1"
hidden_size = 128

[components.spancat.model.scorer]
@layers = "spacy.LinearLogistic.v1"
nO = null
nI = null

[components.spancat.suggester]
@misc = "spacy.ngram_suggester.v1"
sizes = [1,2,3,4]
""",
}

TRAINING = """
[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${{paths.train}}
max_length = 0

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${{paths.dev}}
max_length = 0

[training]
dev_corpus = "corpora.dev"
train_corpus = "corpora.train"
seed = ${{system.seed}}
gpu_allocator = null
dropout = 0.1
accumulate_gradient = 1
patience = 1600
max_epochs = 0
max_steps = {max_steps}
eval_frequency = {eval_frequency}
frozen_components = {frozen}
annotating_components = []
before_to_disk = null

[training.batcher]
@batchers = "spacy.batch_by_words.v1"
discard_oversize = false
tolerance = 0.2

[training.batcher.size]
@schedules = "compounding.v1"
start = 100
stop = 1000
compound = 1.001

[training.optimizer]
@optimizers = "Adam.v1"
learn_rate = 0.001

[training.score_weights]
{weights}

[initialize]
vectors = null
{before_init}
"""

# Teacher components a student keeps (sourced, frozen): the rest of the pipeline it ran after.
KEEP = (
    "tok2vec",
    "tagger",
    "morphologizer",
    "parser",
    "senter",
    "attribute_ruler",
    "lemmatizer",
    "ner",
)


def component_name(student: str, teacher: Teacher) -> str:
    if student == "textcat":
        return "textcat" if teacher.exclusive else "textcat_multilabel"
    return student


def student_config(
    teacher: Teacher,
    student: str,
    *,
    max_steps: int = 2000,
    eval_frequency: int = 100,
    width: int = 96,
    warm_start: bool = True,
) -> str:
    name = component_name(student, teacher)
    sourced = {
        n: src
        for n, src in teacher.sourced.items()
        if n in KEEP and not (n == "ner" and student == "ner")
    }
    # A ner student starts from the teacher pipeline's own NER (en_core_web_sm's) where it has
    # one, and is trained further on the teacher's labels: on the gold dev split 0.76 entity F
    # against 0.50 for a CNN trained from scratch on the same 76 teacher-labelled docs
    # (benchmarks/DISTILL.md).
    init_from = teacher.sourced.get("ner") if student == "ner" and warm_start else None
    pipeline = list(sourced) + [name]
    lines = [
        "[paths]",
        "train = null",
        "dev = null",
        "",
        "[system]",
        "seed = 0",
        "gpu_allocator = null",
        "",
        "[nlp]",
        'lang = "en"',
        f"pipeline = {json.dumps(pipeline)}",
        "batch_size = 256",
        'tokenizer = {"@tokenizers":"spacy.Tokenizer.v1"}',
        "",
        "[components]",
    ]
    for comp, src in sourced.items():
        lines += ["", f"[components.{comp}]", f"source = {json.dumps(src)}"]
    text = "\n".join(lines) + "\n"
    threshold = "threshold = 0.5" if name == "textcat_multilabel" else ""
    if init_from is not None:  # sourced, not frozen: trained on
        text += f"\n[components.ner]\nsource = {json.dumps(init_from)}\n"
    else:
        text += _component(student, name, teacher, threshold, width)
    text += TRAINING.format(
        max_steps=max_steps,
        eval_frequency=eval_frequency,
        frozen=json.dumps(list(sourced)),
        weights=_weights(student),
        before_init=_copy_tokenizer(teacher),
    )
    return text


def _component(student: str, name: str, teacher: Teacher, threshold: str, width: int) -> str:
    text = COMPONENTS[student].format(
        name=name,
        threshold=threshold,
        exclusive="true" if teacher.exclusive else "false",
        spans_key=SPANS_KEY,
    )
    if student != "textcat":  # the bag-of-words textcat has no token vectors
        text += TOK2VEC.format(name=name, width=width)
    return text


def _copy_tokenizer(teacher: Teacher) -> str:
    """The tokenizer (and vocab) of the package the teacher's components come from, e.g.
    en_core_web_sm's, copied when the student is initialised; none for a pipeline-folder
    teacher (copying from it would load its LLM; its tokenizer is English's anyway)."""
    if teacher.path.is_dir():
        return ""
    bases = sorted({src for src in teacher.sourced.values() if src})
    if not bases:
        return ""
    return (
        '\n[initialize.before_init]\n@callbacks = "spacy.copy_from_base_model.v1"\n'
        f"tokenizer = {json.dumps(bases[0])}\nvocab = {json.dumps(bases[0])}\n"
    )


def _weights(student: str) -> str:
    if student == "textcat":
        return "cats_macro_f = 1.0"
    if student == "ner":
        return "ents_f = 1.0\nents_p = 0.0\nents_r = 0.0"
    return f"spans_{SPANS_KEY}_f = 1.0\nspans_{SPANS_KEY}_p = 0.0\nspans_{SPANS_KEY}_r = 0.0"


def write_config(text: str, path: Path) -> None:
    write_atomic(path, text.encode("utf-8"))


def train_student(
    config: Path, train: Path, dev: Path, output: Path, overrides: Optional[Dict[str, Any]] = None
) -> Path:
    """``spacy train CONFIG -o OUTPUT --paths.train --paths.dev``; the best model's folder.
    A run a kill cut short left a half-written folder: it is replaced."""
    from spacy.cli.train import train as spacy_train

    if output.exists():
        shutil.rmtree(output)
    settings: Dict[str, Any] = {
        "paths.train": str(train),
        "paths.dev": str(dev),
        **(overrides or {}),
    }
    try:
        spacy_train(config, output, use_gpu=-1, overrides=settings)
    except SystemExit as e:  # spaCy's msg.fail exits: the config or the data is wrong
        raise DistillError(
            Errors.E710.format(
                config=config, error=f"spaCy exited with {e.code}; see its output above"
            )
        ) from None
    except (ValueError, KeyError) as e:
        raise DistillError(Errors.E710.format(config=config, error=e)) from None
    best = output / "model-best"
    return best if best.exists() else output / "model-last"


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
