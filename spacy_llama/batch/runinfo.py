"""``OUTPUT.run.json``: what a resume must agree with.

It remembers the config hash (with a digest per setting, so a refusal names the settings
that changed), the shard and what identifies the input (per file: size, mtime, SHA-256), so
a resume with a different config or a changed input is refused instead of silently mixing
two configs in one file or skipping and repeating documents whose ``FILE:LINE`` ids moved.
An input that only had lines appended resumes (the ids of the old lines are unchanged).
An output with records but no readable run.json cannot be checked, so its resume is
refused too. The local and the Ray run
write the same record (:func:`run_info`), so either resumes the other.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import Errors, RunStateError, Warnings
from .files import PathLike, side_path, write_atomic
from .options import AnnotateOptions
from .reader import file_name, input_files, input_identity, prefix_digest
from .sinks import docbin_parts


def run_info(
    opts: AnnotateOptions,
    config_hash: Optional[str],
    *,
    finished: bool,
    runner: Optional[str],
    config_keys: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """The record of one run: enough to refuse a mismatched resume and to say what ran."""
    from .. import __version__

    info: Dict[str, Any] = {
        "config_hash": config_hash,
        "config_keys": config_keys,
        "inputs": input_identity(opts.input),
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

    def check(
        self,
        *,
        config_hash: str,
        shard: Optional[str],
        output: Path,
        config_keys: Optional[Dict[str, str]] = None,
    ) -> None:
        """Refuse a resume that would add to ``output`` with another config or shard, or
        that cannot tell: records there, but no readable run.json to compare with."""
        old = self.resumable(output)
        if old is None:
            return
        if old.get("config_hash") != config_hash:
            changed = changed_keys(old.get("config_keys"), config_keys)
            if changed:
                raise RunStateError(Errors.E600.format(output=output, keys=changed))
            raise RunStateError(
                Errors.E016.format(output=output, old=old.get("config_hash"), new=config_hash)
            )
        if old.get("shard") != shard:
            raise RunStateError(Errors.E017.format(output=output, old=old.get("shard"), new=shard))

    def check_input(self, *, input: Path, output: Path) -> None:
        """Refuse a resume whose input is not the one ``output`` was started on (before any
        model is loaded). A .txt/.jsonl file that only grew at its end is the same input."""
        old = self.resumable(output)
        if old is None or not has_records(output):
            return
        recorded = old.get("inputs")
        if not isinstance(recorded, dict):
            warnings.warn(f"[spacy-llama] {Warnings.W600.format(path=self.path)}", stacklevel=2)
            return
        changes = input_changes(recorded, input)
        if changes:
            raise RunStateError(Errors.E601.format(output=output, changes="; ".join(changes)))

    def write(self, info: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(info, indent=2) + "\n").encode("utf-8"))


def has_records(output: Path) -> bool:
    """Whether an output holds anything a resume would add to: a non-empty JSONL file, or
    a DocBin folder with parts."""
    if output.is_dir():
        return bool(docbin_parts(output))
    return output.is_file() and output.stat().st_size > 0


def changed_keys(old: Any, new: Optional[Dict[str, str]]) -> str:
    """The settings whose digests differ, named (at most 12), or "" when either side has no
    per-setting record (a run.json of an older version)."""
    if not isinstance(old, dict) or new is None:
        return ""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(_describe(k, old, new) for k in keys[:12])
    return shown + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")


def _describe(key: str, old: Dict[str, Any], new: Dict[str, str]) -> str:
    if key not in old:
        return f"{key} (added)"
    if key not in new:
        return f"{key} (removed)"
    return key


def input_changes(recorded: Dict[str, Any], path: Path) -> List[str]:
    """How the input at ``path`` differs from the recorded identity; [] when it is the same
    input, or the same with lines appended to a line-based file."""
    root = Path(path)
    files = {}
    if root.exists():
        files = {file_name(root, f): f for f in input_files(root)}
    now = input_identity(root) if files else {}
    changes: List[str] = []
    for name, old in sorted(recorded.items()):
        new = now.get(name)
        if new is None:
            changes.append(f"{name} is no longer in the input")
        elif new.get("sha256") != old.get("sha256") and not _appended(files[name], old, new):
            changes.append(
                f"{name} changed (was {old.get('size')} bytes, now {new['size']}; its "
                "content differs)"
            )
    return changes


def _appended(file: Path, old: Dict[str, Any], new: Dict[str, Any]) -> bool:
    """Only lines were added at the end: the old bytes are a prefix, ending a line."""
    size = old.get("size")
    if file.suffix == ".spacy" or not isinstance(size, int) or new["size"] <= size:
        return False
    if size:
        with file.open("rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                return False
    return prefix_digest(file, size) == old.get("sha256")
