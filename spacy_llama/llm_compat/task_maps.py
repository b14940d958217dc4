"""One spacy-llm task block -> the nearest task of this project, and what changed.

Each mapper reads the (uninterpolated) task block of a spacy-llm config and returns the
``llama`` component's task block, the generation settings it needs, the few-shot records
to write (already in this project's format) and a note per setting. A mapper that cannot
map a block (e.g. no labels) returns :func:`unmapped` with the reason; the translator then
keeps that component on spacy-llm with ``spacy-llama.SpacyLLM.v1`` as its model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .examples import entity_examples, examples_path, read_examples, textcat_examples

Block = Dict[str, Any]
CARRIED, CHANGED, MISSING, KEPT = "carried", "changed", "no equivalent", "kept on spacy-llm"


@dataclass
class Note:
    where: str  # e.g. "[components.llm.task] labels"
    kind: str  # CARRIED / CHANGED / MISSING / KEPT
    detail: str

    def line(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass
class Mapped:
    task: Block
    generation: Block
    examples: Optional[List[Dict[str, Any]]] = None
    notes: List[Note] = field(default_factory=list)
    unmapped: str = ""  # why the block has no equivalent here ("": it has one)


def unmapped(reason: str) -> Mapped:
    return Mapped({}, {}, unmapped=reason)


@dataclass
class Context:
    """What a mapper needs besides the block: where it is (for notes), how to find an
    examples file, and the component's name."""

    component: str
    find_file: Callable[[str], Path]

    @property
    def where(self) -> str:
        return f"[components.{self.component}.task]"


def labels_of(value: Any) -> List[str]:
    """spacy-llm's labels: a list, or one comma-separated string (v1)."""
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return [str(x) for x in value or []]


class _Notes:
    def __init__(self, ctx: Context, block: Block) -> None:
        self.ctx, self.block, self.items = ctx, block, []  # type: ignore[var-annotated]

    def add(self, key: str, kind: str, detail: str) -> None:
        self.items.append(Note(f"{self.ctx.where} {key}", kind, detail))

    def common(self, *, handled: List[str], sharding: bool = True) -> None:
        """Notes for the settings every spacy-llm task may have and no mapper carries."""
        b = self.block
        if "template" in b and "template" not in handled:
            self.add(
                "template",
                MISSING,
                "spacy-llm templates render spacy-llm's own "
                "variables; the task's own template is used (set template/template_path "
                "to change it)",
            )
        if "normalizer" in b:
            self.add("normalizer", CHANGED, "labels are matched case-insensitively")
        for key in ("alignment_mode", "case_sensitive_matching", "single_match"):
            if key in b:
                self.add(
                    key,
                    CHANGED,
                    "the answer is constrained to the doc's own "
                    "substrings, so every answer aligns to tokens",
                )
        if sharding and ("shard_mapper" in b or "shard_reducer" in b):
            self.add(
                "shard_mapper",
                CHANGED,
                "a doc longer than the context is cut to fit "
                '(on_overflow = "truncate"), not sharded',
            )
        if "scorer" in b:
            self.add("scorer", CHANGED, "the component's scorer, spacy-llama.task_scorer.v1")
        for key in ("parse_responses", "prompt_example_type", "verbose"):
            if key in b:
                self.add(key, MISSING, "answers are parsed by the task itself")


def _examples(ctx: Context, block: Block) -> Optional[List[Dict[str, Any]]]:
    path = examples_path(block.get("examples"))
    if path is None:
        return None
    file = ctx.find_file(path)
    return read_examples(file, ctx.where)


def _entity_task(ctx: Context, block: Block, name: str, *, spans_key: Optional[str]) -> Mapped:
    notes = _Notes(ctx, block)
    raw = _examples(ctx, block)
    path = examples_path(block.get("examples"))
    examples = (
        entity_examples(raw, ctx.where, ctx.find_file(path)) if raw is not None and path else None
    )
    labels = labels_of(block.get("labels"))
    if labels:
        notes.add("labels", CARRIED, str(labels))
    elif examples:
        labels = sorted({e["label"] for ex in examples for e in ex["entities"]})
        notes.add("labels", CHANGED, f"taken from the examples now: {labels}")
    else:
        return unmapped(f"{name} has no labels and no examples to take them from")
    task: Block = {"@llama_tasks": "spacy-llama.NER.v2", "labels": labels, "chat": True}
    defs = block.get("label_definitions")
    if defs:
        task["label_definitions"] = dict(defs)
        notes.add("label_definitions", CARRIED, f"{len(defs)} definitions")
    if block.get("description"):
        task["system"] = str(block["description"])
        notes.add("description", CHANGED, "now the system prompt")
    if examples is not None:
        notes.add(
            "examples",
            CHANGED,
            f'{len(examples)} records rewritten as {{"text", "entities": [{{"text", "label"}}]}}',
        )
    if spans_key is None:
        task["merge"] = "prefer_llama"
        notes.add(
            "(doc.ents)",
            CHANGED,
            'merge = "prefer_llama": the answers replace '
            "overlapping upstream entities; spacy-llm dropped all upstream entities",
        )
    else:
        task["merge"] = "spans"
        task["spans_key"] = spans_key
        notes.add("spans_key", CARRIED, repr(spans_key))
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.NER.v2: JSON constrained to the "
        "labels and the doc's own text (no answer is lost to parsing)",
    )
    notes.common(handled=[])
    return Mapped(task, {"max_new_tokens": 320}, examples, notes.items)


def map_ner(ctx: Context, block: Block, name: str) -> Mapped:
    return _entity_task(ctx, block, name, spans_key=None)


def map_spancat(ctx: Context, block: Block, name: str) -> Mapped:
    return _entity_task(ctx, block, name, spans_key=str(block.get("spans_key", "sc")))


def map_textcat(ctx: Context, block: Block, name: str) -> Mapped:
    notes = _Notes(ctx, block)
    labels = labels_of(block.get("labels"))
    if not labels:
        return unmapped(f"{name} has no labels")
    binary = len(labels) == 1
    exclusive = bool(block.get("exclusive_classes", False)) and not binary
    task: Block = {
        "@llama_tasks": "spacy-llama.TextCat.v3",
        "labels": labels,
        "exclusive": exclusive,
    }
    notes.add("labels", CARRIED, str(labels))
    notes.add(
        "exclusive_classes",
        CARRIED if not binary else CHANGED,
        f"exclusive = {str(exclusive).lower()}"
        + (" (one label: scored on its own, as spacy-llm's binary mode)" if binary else ""),
    )
    defs = block.get("label_definitions")
    if defs:
        task["label_definitions"] = dict(defs)
        notes.add("label_definitions", CARRIED, f"{len(defs)} definitions")
    if "allow_none" in block:
        notes.add(
            "allow_none",
            CHANGED,
            "exclusive: the best label always wins; not "
            "exclusive: each label passes at probability >= 0.5, so none may",
        )
    raw = _examples(ctx, block)
    if raw is not None:
        path = ctx.find_file(str(examples_path(block.get("examples"))))
        recs = textcat_examples(raw, ctx.where, path, labels=labels, binary=binary)
        kept = [r for r in recs if not exclusive or len(r["labels"]) == 1]
        task_examples: Optional[List[Dict[str, Any]]] = kept
        notes.add(
            "examples",
            CHANGED,
            f"{len(kept)} records rewritten as "
            '{"text", "labels"}'
            + (
                f"; {len(recs) - len(kept)} without exactly one label left out (exclusive)"
                if len(kept) < len(recs)
                else ""
            ),
        )
    else:
        task_examples = None
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.TextCat.v3: every label scored "
        "by its calibrated log-likelihood (a probability per label, never an "
        "unparseable answer)",
    )
    notes.common(handled=[])
    return Mapped(task, {"max_new_tokens": 1}, task_examples, notes.items)


def map_sentiment(ctx: Context, block: Block, name: str) -> Mapped:
    notes = _Notes(ctx, block)
    task: Block = {
        "@llama_tasks": "spacy-llama.TextCat.v3",
        "labels": ["positive", "negative"],
        "exclusive": True,
    }
    field_name = block.get("field", "sentiment")
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.TextCat.v3 with labels positive and negative (scored, calibrated)",
    )
    notes.add(
        "field",
        CHANGED,
        f'doc._.{field_name} (a 0-1 score) is now doc.cats["positive"] (a probability)',
    )
    raw = _examples(ctx, block)
    recs = None
    if raw is not None:
        recs = [
            {
                "text": r["text"],
                "labels": ["positive" if float(r.get("score", 0)) >= 0.5 else "negative"],
            }
            for r in raw
            if isinstance(r.get("text"), str)
        ]
        notes.add("examples", CHANGED, f"{len(recs)} records: score >= 0.5 is positive")
    notes.common(handled=[])
    return Mapped(task, {"max_new_tokens": 1}, recs, notes.items)


def map_rel(ctx: Context, block: Block, name: str) -> Mapped:
    notes = _Notes(ctx, block)
    labels = labels_of(block.get("labels"))
    if not labels:
        return unmapped(f"{name} has no labels")
    task: Block = {"@llama_tasks": "spacy-llama.REL.v1", "labels": labels}
    notes.add("labels", CARRIED, str(labels))
    defs = block.get("label_definitions")
    if defs:
        task["label_definitions"] = dict(defs)
        notes.add("label_definitions", CARRIED, f"{len(defs)} definitions")
    if "examples" in block:
        notes.add("examples", MISSING, "spacy-llama.REL.v1 takes no few-shot examples")
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.REL.v1: JSON constrained to the "
        "labels and the doc's entities; relations go to doc._.llama_relations as "
        "{head, tail, relation}, not doc._.rel as {dep, dest, relation}",
    )
    notes.common(handled=[])
    return Mapped(task, {"max_new_tokens": 192}, None, notes.items)


def map_summarization(ctx: Context, block: Block, name: str) -> Mapped:
    notes = _Notes(ctx, block)
    task: Block = {"@llama_tasks": "spacy-llama.Summary.v1"}
    words = block.get("max_n_words")
    if words:
        task["max_words"] = int(words)
        notes.add("max_n_words", CARRIED, f"max_words = {int(words)}")
    else:
        notes.add("max_n_words", CHANGED, "no limit before; max_words = 40 now")
    field_name = str(block.get("field", "summary"))
    task["summary_attr"] = field_name
    notes.add("field", CARRIED, f"summary_attr = {field_name!r}")
    if "examples" in block:
        notes.add("examples", MISSING, "spacy-llama.Summary.v1 takes no few-shot examples")
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.Summary.v1 (clipped to max_words at a sentence end)",
    )
    notes.common(handled=[])
    max_new = max(64, 2 * int(words)) if words else 96
    return Mapped(task, {"max_new_tokens": max_new}, None, notes.items)


def map_raw(ctx: Context, block: Block, name: str) -> Mapped:
    notes = _Notes(ctx, block)
    task: Block = {"@llama_tasks": "spacy-llama.Completion.v1", "chat": "auto"}
    field_name = str(block.get("field", "llm_reply"))
    task["completion_attr"] = field_name
    notes.add("field", CARRIED, f"completion_attr = {field_name!r}")
    template = block.get("template")
    if isinstance(template, str) and "examples" not in template:
        task["template"] = template
        notes.add("template", CARRIED, "rendered with the doc's text as {{ text }}")
    elif template is not None:
        notes.add(
            "template",
            MISSING,
            "it renders spacy-llm's examples; the doc's text is sent as it is ({{ text }})",
        )
    if "examples" in block:
        notes.add(
            "examples",
            MISSING,
            "spacy-llama.Completion.v1 takes no few-shot examples; write them into the template",
        )
    notes.add(
        "@llm_tasks",
        CHANGED,
        f"{name} -> spacy-llama.Completion.v1 (the model's chat "
        'template when it has one: chat = "auto")',
    )
    notes.common(handled=["template"])
    return Mapped(task, {"max_new_tokens": 256}, None, notes.items)


MAPPERS: Dict[str, Callable[[Context, Block, str], Mapped]] = {
    **{f"spacy.NER.v{v}": map_ner for v in (1, 2, 3)},
    **{f"spacy.SpanCat.v{v}": map_spancat for v in (1, 2, 3)},
    **{f"spacy.TextCat.v{v}": map_textcat for v in (1, 2, 3)},
    "spacy.REL.v1": map_rel,
    "spacy.Summarization.v1": map_summarization,
    "spacy.Sentiment.v1": map_sentiment,
    "spacy.Raw.v1": map_raw,
}

# The task of each task-named factory of spacy-llm when its config names none.
FACTORY_TASKS = {
    "llm_ner": "spacy.NER.v3",
    "llm_spancat": "spacy.SpanCat.v3",
    "llm_textcat": "spacy.TextCat.v3",
    "llm_rel": "spacy.REL.v1",
    "llm_summarization": "spacy.Summarization.v1",
    "llm_sentiment": "spacy.Sentiment.v1",
    "llm_raw": "spacy.Raw.v1",
    "llm_translation": "spacy.Translation.v1",
    "llm_entitylinker": "spacy.EntityLinker.v1",
}
