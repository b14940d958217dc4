"""``OUTPUT.run.json``: what a resume must agree with.

It remembers the config hash and the shard, so a resume with a different config is
refused instead of silently mixing two configs in one file. The local and the Ray run
write the same record (:func:`run_info`), so either resumes the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import Errors, RunStateError
from .files import PathLike, side_path, write_atomic
from .options import AnnotateOptions


def run_info(
    opts: AnnotateOptions, config_hash: Optional[str], *, finished: bool, runner: Optional[str]
) -> Dict[str, Any]:
    """The record of one run: enough to refuse a mismatched resume and to say what ran."""
    from .. import __version__

    info: Dict[str, Any] = {
        "config_hash": config_hash,
        "shard": opts.shard,
        "config": str(opts.config),
        "input": str(opts.input),
        "overrides": {k: repr(v) for k, v in opts.overrides.items()},
        "spacy_llama": __version__,
        "finished": finished,
    }
    if runner is not None:
        info["runner"] = runner
    return info


class RunInfo:
    """What a resume must agree with: the config hash and the shard."""

    def __init__(self, output: PathLike) -> None:
        self.path = side_path(output, ".run.json")

    def read(self) -> Optional[Dict[str, Any]]:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def check(self, *, config_hash: str, shard: Optional[str], output: Path) -> None:
        old = self.read()
        if old is None:
            return
        if old.get("config_hash") != config_hash:
            raise RunStateError(
                Errors.E016.format(output=output, old=old.get("config_hash"), new=config_hash)
            )
        if old.get("shard") != shard:
            raise RunStateError(Errors.E017.format(output=output, old=old.get("shard"), new=shard))

    def write(self, info: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
