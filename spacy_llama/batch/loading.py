"""The pipeline of a corpus run: its config read without building anything, or the whole
pipeline loaded (a .cfg is assembled on the fly, like ``spacy assemble``; a folder is
loaded)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, Union

import spacy
from confection import Config
from spacy.language import Language
from spacy.util import load_config, load_model_from_config

from ..errors import Errors, PipelineError
from ..models.threads import configure_threads


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
