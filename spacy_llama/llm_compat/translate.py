"""A spacy-llm pipeline config -> a spacy-llama one (``python -m spacy_llama from-spacy-llm``).

Every ``llm`` / ``llm_<task>`` component becomes a ``llama`` component running the nearest
task of this project (:mod:`.task_maps`); a task with no equivalent keeps its spacy-llm
component with ``spacy-llama.SpacyLLM.v1`` as the model, so the pipeline still runs
locally. Every other section is copied as it is. Each setting read gets a note: carried,
changed (and why), no equivalent, or kept on spacy-llm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from confection import Config

from ..errors import CompatError, Errors
from .examples import write_examples
from .task_maps import (
    CARRIED,
    CHANGED,
    FACTORY_TASKS,
    KEPT,
    MAPPERS,
    MISSING,
    Block,
    Context,
    Note,
    unmapped,
)

BACKEND = "spacy-llama.SpacyLLM.v1"
DEFAULT_MODEL: Block = {
    "@llama_models": "spacy-llama.SmolLM2.v1",
    "device": "auto",
    "dtype": "auto",
}
# spacy-llm's config_run / config keys with a generation setting of the same meaning
GENERATION_KEYS = {
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_new_tokens",
}


@dataclass
class Translation:
    config: Config
    notes: List[Note] = field(default_factory=list)
    example_files: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)

    @property
    def unmapped(self) -> List[Note]:
        return [n for n in self.notes if n.kind in (MISSING, KEPT)]


def read_config(path: Path) -> Config:
    try:
        return Config().from_disk(path, interpolate=False)
    except Exception as e:  # confection raises several kinds for a broken file
        raise CompatError(Errors.E750.format(path=path, error=e)) from None


def model_block(model_path: Optional[Path]) -> Block:
    """The model block of the new components: the embedded SmolLM2, or a local model."""
    if model_path is None:
        return dict(DEFAULT_MODEL)
    if model_path.is_file() and model_path.suffix == ".gguf":
        return {"@llama_models": "spacy-llama.GGUF.v1", "path": str(model_path)}
    if (model_path / "config.json").exists():
        return {"@llama_models": "spacy-llama.HF.v1", "path": str(model_path)}
    raise CompatError(Errors.E755.format(path=model_path))


def translate(
    config: Config, *, source: Path, out: Path, model_path: Optional[Path] = None
) -> Translation:
    """The translated config (a copy) and the notes; few-shot files to write are returned
    in ``example_files`` (path -> records), see :func:`write_translation`."""
    new = config.copy()
    result = Translation(new)
    components = new.get("components", {})
    try:  # values as spacy-llm sees them (${paths.x} filled in); the rest is copied as written
        values = config.interpolate().get("components", {})
    except Exception:  # an unresolvable variable: read the values as written
        values = components
    llm_names = [n for n, c in components.items() if _is_llm(c)]
    if not llm_names:
        found = sorted({str(c.get("factory", c.get("source", "?"))) for c in components.values()})
        raise CompatError(Errors.E751.format(path=source, found=found or "none"))
    target_model = model_block(model_path)
    for name in llm_names:
        comp = values.get(name, components[name])
        ctx = Context(name, functools.partial(_find, source=source))
        where = f"[components.{name}]"
        task = dict(comp.get("task") or {"@llm_tasks": FACTORY_TASKS.get(comp["factory"], "")})
        task_name = str(task.get("@llm_tasks", ""))
        mapper = MAPPERS.get(task_name)
        model_notes, generation, comp_model = _model(
            comp.get("model"), where, target_model, model_path is not None
        )
        if mapper is None:
            mapped = unmapped(f"no spacy-llama task for {task_name or 'this task'}")
        else:
            mapped = mapper(ctx, task, task_name)
        if mapped.unmapped:
            components[name] = _keep_on_spacy_llm(comp, task, comp_model, generation)
            result.notes.append(
                Note(
                    where,
                    KEPT,
                    f"{mapped.unmapped}; the component stays spacy-llm's "
                    f"{comp['factory']!r} with model = {BACKEND} (needs "
                    "pip install 'spacy-llama[spacy-llm]')",
                )
            )
            result.notes.extend(model_notes)
            continue
        if mapped.examples is not None:
            file = out.parent / f"{out.stem}.{name}.examples.jsonl"
            result.example_files[str(file)] = mapped.examples
            mapped.task["examples"] = {
                "@llama_readers": "spacy-llama.FewShotReader.v1",
                "path": str(file),
            }
        result.notes.append(Note(where, CHANGED, f"factory {comp['factory']!r} -> 'llama'"))
        result.notes.extend(model_notes)
        result.notes.extend(mapped.notes)
        components[name] = {
            "factory": "llama",
            "batch_size": 16,
            "model": comp_model,
            "task": mapped.task,
            "generation": _generation(
                mapped.task, mapped.generation, generation, where, result.notes
            ),
            **_cache(comp.get("cache"), where, result.notes),
        }
        for key in ("save_io", "validate_types"):
            if key in comp:
                result.notes.append(
                    Note(
                        f"{where} {key}",
                        MISSING,
                        "prompts and answers are not saved on the doc"
                        if key == "save_io"
                        else "not needed: the task and model are one",
                    )
                )
    return result


def write_translation(result: Translation, out: Path) -> None:
    for file, records in result.example_files.items():
        write_examples(Path(file), records)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.config.to_disk(out, interpolate=False)


# Tasks whose answer is constrained JSON: cut short, it cannot be read at all.
STRUCTURED = ("spacy-llama.NER.v2", "spacy-llama.REL.v1")
SCORED = ("spacy-llama.TextCat.v2", "spacy-llama.TextCat.v3")


def _generation(task: Block, needed: Block, carried: Block, where: str, notes: List[Note]) -> Block:
    """Greedy unless the spacy-llm config sampled; a scoring task (TextCat) generates
    nothing, so its one token stays; a structured answer keeps at least the room its
    items need."""
    out: Block = {"temperature": 0.0, **needed, **carried}
    name = task.get("@llama_tasks")
    kept = needed["max_new_tokens"]
    if name in SCORED or (name in STRUCTURED and out["max_new_tokens"] < kept):
        if out["max_new_tokens"] != kept:
            notes.append(
                Note(
                    f"{where[:-1]}.generation] max_new_tokens",
                    CHANGED,
                    f"{out['max_new_tokens']} -> {kept}: "
                    + (
                        "the task scores labels and generates nothing"
                        if name in SCORED
                        else "a constrained JSON answer cut short cannot be read"
                    ),
                )
            )
        out["max_new_tokens"] = kept
    return out


def _is_llm(comp: Any) -> bool:
    factory = str(comp.get("factory", "")) if isinstance(comp, dict) else ""
    return factory == "llm" or factory.startswith("llm_")


def _find(path: str, source: Path) -> Path:
    """An examples path as spacy-llm reads it (from the working folder), else next to the
    config."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    beside = source.parent / p
    return beside if beside.exists() else p


def _model(
    block: Any, where: str, target: Block, explicit: bool
) -> Tuple[List[Note], Block, Block]:
    """Notes on the spacy-llm model block, the generation settings it carries, and the
    model block of the new component: ``target``, or the llama model block inside a
    spacy-llama.SpacyLLM.v1 block (unless --model-path named one)."""
    block = dict(block or {"@llm_models": "spacy.GPT-3-5.v2"})
    if block.get("@llm_models") == BACKEND:
        return _backend_model(block, where, target, explicit)
    notes: List[Note] = []
    generation: Block = {}
    name = block.get("@llm_models", "?")
    detail = f" ({block['name']})" if "name" in block else ""
    notes.append(
        Note(
            f"{where[:-1]}.model]",
            CHANGED,
            f"{name}{detail} -> "
            f"{target['@llama_models']}: local, offline, batched "
            "(pass --model-path for another local model)",
        )
    )
    for section in ("config_run", "config"):
        for key, value in dict(block.get(section) or {}).items():
            if key in GENERATION_KEYS:
                generation[GENERATION_KEYS[key]] = value
                notes.append(
                    Note(
                        f"{where[:-1]}.model.{section}] {key}",
                        CARRIED,
                        f"generation.{GENERATION_KEYS[key]} = {value!r}",
                    )
                )
            else:
                notes.append(
                    Note(
                        f"{where[:-1]}.model.{section}] {key}",
                        MISSING,
                        "a setting of spacy-llm's model",
                    )
                )
    for key in (
        "context_length",
        "endpoint",
        "strict",
        "max_tries",
        "interval",
        "max_request_time",
        "config_init",
    ):
        if key in block:
            why = (
                "read from the model's own tokenizer"
                if key == "context_length"
                else "no network requests: the model runs in this process"
            )
            notes.append(Note(f"{where[:-1]}.model] {key}", CHANGED, why))
    return notes, generation, dict(target)


def _backend_model(
    block: Block, where: str, target: Block, explicit: bool
) -> Tuple[List[Note], Block, Block]:
    """A component already on spacy-llama.SpacyLLM.v1: its model and generation carry."""
    model = dict(target) if explicit or "model" not in block else dict(block["model"])
    notes = [
        Note(
            f"{where[:-1]}.model]",
            CARRIED if not explicit else CHANGED,
            f"{BACKEND} -> its model block as the component's ({model['@llama_models']})",
        )
    ]
    generation = dict(block.get("generation") or {})
    for key, value in generation.items():
        notes.append(Note(f"{where[:-1]}.model.generation] {key}", CARRIED, repr(value)))
    for key in ("chat", "system", "batch_size", "cache", "prefix_cache", "prompt_lookup"):
        if key in block:
            notes.append(
                Note(f"{where[:-1]}.model] {key}", MISSING, "set it on the task or component")
            )
    return notes, generation, model


def _cache(block: Any, where: str, notes: List[Note]) -> Block:
    block = dict(block or {})
    path = block.get("path")
    if not path:
        return {}
    file = str(Path(str(path)) / "spacy_llama.sqlite")
    notes.append(
        Note(
            f"{where[:-1]}.cache] path",
            CHANGED,
            "spacy-llm's per-doc cache -> "
            f"spacy-llama.SQLiteCache.v1 at {file} (answers per prompt)",
        )
    )
    return {"cache": {"@llama_caches": "spacy-llama.SQLiteCache.v1", "path": file}}


def _keep_on_spacy_llm(comp: Any, task: Block, target: Block, generation: Block) -> Block:
    """spacy-llm's component with this project's model. The factory becomes ``llm`` with
    the task written out: only ``llm`` is an entry point of spacy-llm, so a fresh process
    (``spacy assemble``) finds it; its ``llm_<task>`` factories exist only once
    ``spacy_llm`` has been imported."""
    kept = {**dict(comp), "factory": "llm", "task": dict(task)}
    model: Block = {"@llm_models": BACKEND, "model": dict(target)}
    if generation:
        model["generation"] = dict(generation)
    kept["model"] = model
    return kept


__all__ = [
    "CARRIED",
    "CHANGED",
    "MISSING",
    "KEPT",
    "Translation",
    "translate",
    "read_config",
    "write_translation",
]
