"""What decides a run's output, as a digest per setting and one short hash: a resume is
refused when it changed (``run.json``, :mod:`.runinfo`), naming the settings that did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict

from spacy.language import Language

from ..errors import Errors, PipelineError
from ..models.fingerprint import file_digest
from ..pipeline import LlamaPipe
from .named_files import interpolated, named_files

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
    examples...), each llama model's fingerprint and the text of each prompt template its
    task renders (the package's defaults included: a config that names no template still
    changes output when an upgrade of the package changes the default)."""
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
        if isinstance(pipe, LlamaPipe):
            identity[f"model of {name}"] = _digest(pipe.model_fingerprint)
            for attr, source in pipe.prompt_templates().items():
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


def _contents_digest(setting: str, path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as e:
        raise PipelineError(Errors.E101.format(path=str(path), setting=setting, error=e)) from None
