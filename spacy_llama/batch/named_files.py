"""The files a pipeline config names (prompt templates, few-shot examples, label files...):
their contents decide a run's answers as much as the config's text does, so the run's config
hash (:func:`.prepare.config_hash`) covers them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from confection import Config

# Sections that build the pipeline (training's corpora and [initialize] do not run here).
_BUILD_SECTIONS = ("nlp", "components")
# Blocks whose files other hashes cover: a model's (its fingerprint) and a cache's.
_SKIPPED_BLOCKS = ("@llama_models", "@llama_caches")


def named_files(config: Dict[str, Any]) -> List[Tuple[str, Path]]:
    """(setting, file) for every string of the pipeline's sections that names an existing
    file, in config order; a config's contents decide the answers as much as its text."""
    found: List[Tuple[str, Path]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if any(key in node for key in _SKIPPED_BLOCKS):
                return
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str) and _is_file(node):
            found.append((where, Path(node).expanduser()))

    for section in _BUILD_SECTIONS:
        walk(config.get(section, {}), section)
    return found


def _is_file(value: str) -> bool:
    if not value or "\n" in value or len(value) > 4096:  # inline templates, not paths
        return False
    try:
        return Path(value).expanduser().is_file()
    except (OSError, ValueError):  # too long for the OS, a NUL byte: not a path
        return False


def interpolated(config: Config) -> Dict[str, Any]:
    """``${paths.x}`` resolved, so a file named through a variable is found."""
    try:
        return dict(config.interpolate())
    except Exception:  # it built, so this should not happen; the raw text still counts
        return dict(config)
