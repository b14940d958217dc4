"""Join the outputs of ``annotate --shard I/N`` runs into one.

JSONL shards are concatenated and DocBin folders' docs are copied, each document once (by
id: the first shard given wins). The shards' ``.run.json`` files must agree on the config
and the input, and together cover 1..N with each shard once; ``partial`` merges an
incomplete or repeated set anyway. Records are written as annotate writes them
(``sinks.json_line``), and a failed merge leaves no temporary file. Failed-document lists
are joined too. The merged output gets a ``.run.json`` without a shard, so
``annotate --resume`` on the whole corpus can fill in whatever the shards missed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..errors import Errors, RunStateError
from .files import fsync_dir, side_path, write_atomic
from .lock import locked
from .paths import same_path
from .reader import ID_KEY
from .runinfo import RunInfo
from .sinks import docbin_parts, json_line, scan_jsonl


def merge(
    output: Path, shards: List[Path], *, partial: bool = False, overwrite: bool = False
) -> int:
    """Merge ``shards`` into ``output``; returns the number of documents. ``output`` is
    locked as ``annotate`` locks it, so neither writes it while the other does."""
    with locked([output]):
        return _merge(output, shards, partial=partial, overwrite=overwrite)


def _merge(output: Path, shards: List[Path], *, partial: bool, overwrite: bool) -> int:
    kinds = {p.suffix for p in [output, *shards]}
    if len(kinds) != 1 or kinds - {".jsonl", ".spacy"}:
        raise RunStateError(Errors.E030)
    missing = [str(p) for p in shards if not p.exists()]
    if missing:
        raise RunStateError(Errors.E031.format(paths=", ".join(missing)))
    if output.exists() and not overwrite:
        raise RunStateError(Errors.E032.format(path=output))
    for shard in shards:  # replacing OUTPUT would destroy that shard before it is read
        if same_path(output, shard):
            raise RunStateError(Errors.E063.format(what="OUTPUT", path=output, input=shard))
    common = check_shards(shards, partial=partial)
    if output.suffix == ".jsonl":
        count = merge_jsonl(output, shards)
    else:
        count = merge_docbins(output, shards)
    merge_failed(output, shards)
    RunInfo(output).write(
        {
            **common,
            "shard": None,
            "finished": True,
            "merged_from": [str(p) for p in shards],
        }
    )
    return count


def check_shards(shards: List[Path], *, partial: bool) -> Dict[str, Any]:
    """What the shards share (config hash and keys, input); raises if they disagree or
    (unless partial) miss some or repeat one."""
    infos = [(p, RunInfo(p).read()) for p in shards]
    unknown = [str(p) for p, info in infos if info is None]
    if unknown and not partial:
        raise RunStateError(Errors.E033.format(paths=", ".join(unknown)))
    known = [(p, info) for p, info in infos if info is not None]
    hashes = {info.get("config_hash") for _, info in known}
    if len(hashes) > 1:
        raise RunStateError(Errors.E034)
    inputs = [(p, info["inputs"]) for p, info in known if isinstance(info.get("inputs"), dict)]
    if any(i != inputs[0][1] for _, i in inputs):
        raise RunStateError(Errors.E603.format(paths=", ".join(str(p) for p, _ in inputs)))
    if not partial:
        check_complete(known)
    common: Dict[str, Any] = {"config_hash": hashes.pop() if hashes else None}
    if known and known[0][1].get("config_keys") is not None:
        common["config_keys"] = known[0][1]["config_keys"]
    if inputs and len(inputs) == len(known):
        common["inputs"] = inputs[0][1]
    return common


def check_complete(known: List[Any]) -> None:
    specs = [info.get("shard") for _, info in known]
    by_shard: Dict[str, List[str]] = {}
    for path, info in known:
        if info.get("shard"):
            by_shard.setdefault(info["shard"], []).append(str(path))
    for spec, paths in by_shard.items():
        if len(paths) > 1:
            raise RunStateError(Errors.E602.format(shard=spec, paths=", ".join(paths)))
    ns = {int(s.split("/")[1]) for s in specs if s}
    seen = {int(s.split("/")[0]) for s in specs if s}
    if len(ns) > 1:
        raise RunStateError(Errors.E035.format(counts=sorted(ns)))
    if ns and seen != set(range(1, ns.pop() + 1)):
        raise RunStateError(Errors.E036.format(seen=sorted(seen)))
    unfinished = [str(p) for p, info in known if not info.get("finished")]
    if unfinished:
        raise RunStateError(Errors.E037.format(paths=", ".join(unfinished)))


def merge_jsonl(output: Path, shards: List[Path]) -> int:
    seen: Set[str] = set()
    tmp = output.with_name(f".{output.name}.merging-{os.getpid()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("wb") as out:
            for shard in shards:
                for _, record in scan_jsonl(shard, repair=False):
                    key = str(record["id"])
                    if key in seen:
                        continue  # the same doc in two shards: keep the first
                    seen.add(key)
                    out.write(json_line(record))  # as annotate wrote it
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(output.parent)
    return len(seen)


def merge_docbins(output: Path, shards: List[Path]) -> int:
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    seen: Set[str] = set()
    n = 0
    for shard in shards:
        for part in docbin_parts(shard):
            kept = unseen_docs(part, seen)
            if kept is None:  # every doc new: the part as it is
                shutil.copyfile(part, output / f"part-{n:05d}.spacy")
            elif len(kept):
                write_atomic(output / f"part-{n:05d}.spacy", kept.to_bytes())
            else:
                continue
            n += 1
    fsync_dir(output)
    return len(seen)


def unseen_docs(part: Path, seen: Set[str]) -> Optional[DocBin]:
    """The part's docs whose ids are not in ``seen`` (added to it): None when that is all
    of them, else a DocBin of the new ones (the same doc in two shards: keep the first)."""
    docbin = DocBin(store_user_data=True).from_disk(part)
    docs = list(docbin.get_docs(Vocab()))
    keep = []
    for doc in docs:
        key = str(doc.user_data.get(ID_KEY))
        if key not in seen:
            seen.add(key)
            keep.append(doc)
    if len(keep) == len(docs):
        return None
    return DocBin(store_user_data=True, docs=keep)


def merge_failed(output: Path, shards: List[Path]) -> None:
    lines: List[bytes] = []
    for shard in shards:
        failed = side_path(shard, ".failed.jsonl")
        if failed.exists():
            raw = failed.read_bytes().splitlines(keepends=True)
            lines.extend(line for line in raw if line.strip())
    target = side_path(output, ".failed.jsonl")
    if lines:
        target.write_bytes(b"".join(lines))
    elif target.exists():
        target.unlink()
