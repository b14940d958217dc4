"""``OUTPUT.run.json``: what a resume must agree with.

It remembers the config hash and the shard, so a resume with a different config is
refused instead of silently mixing two configs in one file. An output with records but no
readable run.json cannot be checked, so its resume is refused too. The local and the Ray run
write the same record (:func:`run_info`), so either resumes the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import Errors, RunStateError
from .files import PathLike, side_path, write_atomic
from .options import AnnotateOptions
from .sinks import docbin_parts


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
        return self._load()[0]

    def _load(self) -> Tuple[Optional[Dict[str, Any]], str]:
        """The record, or None and why not ("" when there is no file)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, ""
        except (OSError, UnicodeDecodeError) as e:
            return None, f"{type(e).__name__}: {e}"
        try:
            data = json.loads(text)
        except ValueError as e:
            return None, f"invalid JSON: {e}"
        if not isinstance(data, dict):
            return None, f"a JSON {type(data).__name__}, not an object"
        return data, ""

    def resumable(self, output: Path) -> Optional[Dict[str, Any]]:
        """The record a resume of ``output`` is checked against; refuses (before any model
        is loaded) when ``output`` has records but no readable run.json to compare with."""
        old, problem = self._load()
        if old is None and has_records(output):
            if problem:
                raise RunStateError(
                    Errors.E088.format(path=self.path, reason=problem, output=output)
                )
            raise RunStateError(Errors.E087.format(output=output, path=self.path))
        return old  # None: nothing to mix with (e.g. a run killed before its first batch)

    def check(self, *, config_hash: str, shard: Optional[str], output: Path) -> None:
        """Refuse a resume that would add to ``output`` with another config or shard, or
        that cannot tell: records there, but no readable run.json to compare with."""
        old = self.resumable(output)
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


def has_records(output: Path) -> bool:
    """Whether an output holds anything a resume would add to: a non-empty JSONL file, or
    a DocBin folder with parts."""
    if output.is_dir():
        return bool(docbin_parts(output))
    return output.is_file() and output.stat().st_size > 0
