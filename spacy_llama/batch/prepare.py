"""Preparing a pipeline for a corpus run: load it, fingerprint its config, give its llama
components a cache, choose the batch size, and make a failing document fail alone.

Failures and engine counts travel on ``doc.user_data`` rather than in this process's
memory, because with ``--n-process`` the pipeline runs in child processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import spacy
from confection import Config
from spacy.language import DEFAULT_CONFIG as SPACY_DEFAULTS
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import load_config, load_model_from_config

from ..errors import Errors, PipelineError
from ..generation.sqlite_cache import SQLiteCache
from ..models.fingerprint import file_digest
from ..models.threads import configure_threads
from ..pipeline import DEFAULT_CONFIG as LLAMA_DEFAULTS
from ..tasks.prompt import PromptTemplate
from .named_files import interpolated, named_files
from .parent_watch import exit_with_parent_after_fork
from .reader import ID_KEY, Record
from .sinks import ERROR_KEY, STATS_KEY
from .summary import STATS_FIELDS


def load_pipeline(
    path: Union[str, Path], *, overrides: Dict[str, Any], announce: bool = False
) -> Language:
    """A .cfg is assembled on the fly (like ``spacy assemble``); a folder is loaded.
    ``announce``: a line on stderr before and after (loading takes seconds: the model is
    read, or converted once, and the other components are loaded), where stderr is a
    terminal (as the progress bar: logs and captured output keep one line per problem)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(Errors.E018.format(path=str(path)))
    threads, source = configure_threads()  # before loading: conversion runs torch too
    announce = announce and sys.stderr.isatty()
    if announce:
        print(f"[spacy-llama] loading the pipeline {path} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        if path.is_dir():
            nlp = spacy.load(path, config=overrides)
        else:
            config = load_config(path, overrides=overrides, interpolate=False)
            nlp = load_model_from_config(config, auto_fill=True)
    except Exception as e:  # config and model errors already explain themselves
        raise PipelineError(Errors.E019.format(path=path, error=e)) from None
    if announce:
        seconds = time.perf_counter() - start
        print(
            f"[spacy-llama] loaded {path} in {seconds:.1f} s "
            f"(components: {', '.join(nlp.pipe_names)}; torch threads: {threads}, from "
            f"{source})",
            file=sys.stderr,
            flush=True,
        )
    return nlp


def read_run_config(path: Path, *, overrides: Dict[str, Any]) -> Config:
    """The config of a .cfg or a pipeline folder, without building anything (the Ray
    driver needs its batch size but must not load a model)."""
    file = path / "config.cfg" if path.is_dir() else path
    if not file.exists():
        raise PipelineError(Errors.E018.format(path=str(path)))
    try:
        return load_config(file, overrides=overrides, interpolate=False)
    except Exception as e:
        raise PipelineError(Errors.E020.format(path=file, error=e)) from None


def run_batch_size(config: Config, requested: Optional[int] = None) -> int:
    """Docs per batch (and per durable write) unless ``--batch-size`` says otherwise: the
    smallest of ``[nlp] batch_size`` and the llama components' micro-batches, so progress
    shows and a kill loses little while the model still sees full batches. Missing
    settings take spaCy's and the llama factory's defaults, so a filled and an unfilled
    config of one pipeline give the same size (local and Ray runs agree)."""
    if requested:
        return int(requested)
    nlp_cfg = config.get("nlp", {})
    sizes = [int(nlp_cfg.get("batch_size") or SPACY_DEFAULTS["nlp"]["batch_size"])]
    for comp in config.get("components", {}).values():
        if isinstance(comp, dict) and comp.get("factory") == "llama":
            sizes.append(int(comp.get("batch_size") or LLAMA_DEFAULTS["batch_size"]))
    return min(sizes)


def llama_engines(nlp: Language) -> List[Any]:
    engines = [getattr(pipe, "engine", None) for _, pipe in nlp.pipeline]
    return [e for e in engines if hasattr(e, "cache") and hasattr(e, "stats")]


# OpenAICompatible.v1 settings that change how a server is called, never what it answers:
# a run resumed with a longer timeout or another concurrency is the same run.
SERVER_OPERATIONAL_KEYS = (
    "max_concurrency", "timeout", "max_retries", "retry_backoff", "breaker_threshold",
    "breaker_cooldown", "api_key_env", "deadline",
)  # fmt: skip
# llama component settings that change how fast answers come, never what they are: the
# batch (greedy answers and features do not depend on it), the prefix cache and
# prompt-lookup drafts (exact: a draft is only kept where the model agrees), the cache, and
# the scorer (what `evaluate` reports, not what is annotated).
COMPONENT_OPERATIONAL_KEYS = ("batch_size", "cache", "prefix_cache", "prompt_lookup", "scorer")


def config_hash(nlp: Language) -> str:
    """What decides the output (:func:`config_identity`), as one short hash."""
    return identity_hash(config_identity(nlp))


def identity_hash(identity: Dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def config_identity(nlp: Language) -> Dict[str, str]:
    """What decides the output, key by key (a digest of each value), so a refused resume
    can name the keys that changed: every setting of the pipeline's sections (``nlp``,
    ``components``, variables resolved) less the ones that only change speed or where
    results are cached, the contents of every file the config names (templates, few-shot
    examples...), each llama model's fingerprint and each prompt template's text."""
    config = interpolated(nlp.config.copy())
    identity: Dict[str, str] = {}
    nlp_section = dict(config.get("nlp", {}))
    nlp_section.pop("batch_size", None)  # docs per batch: the same docs come out
    _flatten(nlp_section, "nlp", identity)
    for name, component in config.get("components", {}).items():
        if not isinstance(component, dict):
            continue
        component = dict(component)
        if component.get("factory") == "llama":
            for key in COMPONENT_OPERATIONAL_KEYS:
                component.pop(key, None)
        else:
            component.pop("cache", None)
        model = component.get("model")
        if isinstance(model, dict):  # how patiently a server is asked does not matter either
            component["model"] = {
                k: v for k, v in model.items() if k not in SERVER_OPERATIONAL_KEYS
            }
        _flatten(component, f"components.{name}", identity)
    for setting, path in named_files(config):
        identity[f"file {setting}"] = _contents_digest(setting, path)[:16]
    for name, pipe in nlp.pipeline:
        engine = getattr(pipe, "engine", None)
        if engine is not None and hasattr(engine, "cache") and hasattr(engine, "stats"):
            identity[f"model of {name}"] = _digest(engine.model.fingerprint)
        for attr, source in _templates(pipe):
            identity[f"template {name}.{attr}"] = _digest(source)
    return identity


def _flatten(node: Any, where: str, out: Dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{where}.{key}", out)
    else:
        out[where] = _digest(json.dumps(node, sort_keys=True, default=repr))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _templates(pipe: Any) -> List[Tuple[str, str]]:
    task = getattr(pipe, "task", None)
    items = vars(task).items() if task is not None else ()
    return [(attr, value.source) for attr, value in items if isinstance(value, PromptTemplate)]


def template_sources(nlp: Language) -> List[str]:
    """The text of every prompt template the llama tasks render, the package's own defaults
    included: a config that names no template still changes output when an upgrade of the
    package changes the default, and a resumed run must notice."""
    return [source for _, pipe in nlp.pipeline for _, source in _templates(pipe)]


def _contents_digest(setting: str, path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as e:
        raise PipelineError(Errors.E101.format(path=str(path), setting=setting, error=e)) from None


def set_cache(nlp: Language, *, path: Optional[Path]) -> Optional[SQLiteCache]:
    """Give every llama engine without a cache one at ``path``; ``None`` removes caches."""
    shared = SQLiteCache(path) if path is not None else None
    for engine in llama_engines(nlp):
        if shared is None:
            engine.cache = None
        elif engine.cache is None:
            engine.cache = shared
    return shared


def isolate_failures(name: str, proc: Any, docs: Optional[Sequence[Doc]], error: Exception) -> None:
    """spaCy error handler: retry a failed batch one doc at a time; mark what still fails.
    Without docs (a worker process died) nothing can be attributed, so the error stands.
    A doc that already failed (see :func:`record_doc`) keeps its first reason."""
    if proc is None or not docs:
        raise error
    if len(docs) == 1:
        docs[0].user_data.setdefault(ERROR_KEY, f"{name}: {type(error).__name__}: {error}")
        return
    for doc in docs:
        if ERROR_KEY in doc.user_data:
            continue
        try:
            proc(doc)  # a Pipe's __call__ sends its own failure back here with [doc]
        except Exception as e:
            doc.user_data[ERROR_KEY] = f"{name}: {type(e).__name__}: {e}"


class RunStats:
    """Last component of a batch run: stamps each doc with the engine counts since the
    previous doc, so the parent can total them whichever process did the work."""

    def __init__(self, nlp: Language) -> None:
        self.engines = llama_engines(nlp)
        self.last = self._totals()

    def _totals(self) -> List[int]:
        return [sum(getattr(e.stats, f) for e in self.engines) for f in STATS_FIELDS]

    def __call__(self, doc: Doc) -> Doc:
        now = self._totals()
        doc.user_data[STATS_KEY] = {f: a - b for f, a, b in zip(STATS_FIELDS, now, self.last)}
        self.last = now
        return doc


@Language.factory("spacy_llama_run_stats")
def make_run_stats(nlp: Language, name: str) -> RunStats:
    return RunStats(nlp)


def prepare_for_run(nlp: Language, *, n_process: int = 1) -> None:
    """Install failure isolation and the stats stamp (after hashing the config)."""
    nlp.default_error_handler = isolate_failures  # type: ignore[assignment]
    for _, pipe in nlp.pipeline:
        try:
            getattr(pipe, "set_error_handler", lambda handler: None)(isolate_failures)
        except AttributeError:
            # Not every component takes one (spaCy's cython parser and NER cannot store it);
            # those keep raising, which stops the run: finished batches are already saved.
            pass
    if "spacy_llama_run_stats" not in nlp.pipe_names:
        nlp.add_pipe("spacy_llama_run_stats", last=True)
    if n_process > 1:
        single_threaded_workers()


def record_doc(nlp: Language, rec: Record) -> Doc:
    """The Doc a record is annotated as: its own (a .spacy input keeps its annotations) or
    a new one, stamped with the record's id for the tasks' messages. A text that cannot
    become a Doc (longer than ``nlp.max_length``, or the tokenizer fails) becomes an empty
    stand-in marked as failed, so it is recorded in the failed list with its reason and
    the rest of its batch is written."""
    if rec.doc is not None:
        doc = rec.doc
    elif len(rec.text) > nlp.max_length:
        doc = _failed_doc(nlp, Errors.E086.format(length=len(rec.text), limit=nlp.max_length))
    else:
        try:
            doc = nlp.make_doc(rec.text)
        except Exception as e:  # one bad text must not stop the run
            doc = _failed_doc(nlp, Errors.E089.format(error=f"{type(e).__name__}: {e}"))
    doc.user_data[ID_KEY] = rec.raw_id
    return doc


def _failed_doc(nlp: Language, reason: str) -> Doc:
    doc = Doc(nlp.vocab, words=[])
    doc.user_data[ERROR_KEY] = reason
    return doc


_FORK_HOOK: List[bool] = []


def single_threaded_workers() -> None:
    """spaCy forks its workers. If torch already ran a parallel op here, a child inherits
    OpenMP's thread team without its threads and hangs in the next matmul, unless it drops
    to one thread first; one thread per worker is also what n_process workers want. A
    worker also exits when this process dies (see parent_watch.py): killed with kill -9,
    its workers would otherwise wait for work forever."""
    if _FORK_HOOK:
        return
    _FORK_HOOK.append(True)
    exit_with_parent_after_fork()
    # Hugging Face tokenizers would otherwise warn at every fork that it turns itself off.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def one_thread() -> None:
        import torch

        torch.set_num_threads(1)

    os.register_at_fork(after_in_child=one_thread)
