"""The checkpoint folder and its model-parallel shards: finding, opening (lazily and
safely) and checking that the ``consolidated.NN.pth`` files belong together."""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple, Union

from ...errors import Errors, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
_IGNORED_KEYS = ("rope.freqs",)


def check_meta_folder(path: Union[str, Path]) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(Errors.E170.format(path=str(folder)))
    if not folder.is_dir():
        raise ModelLoadError(Errors.E171.format(path=str(folder)))
    shard_files(folder)  # fail early, before any heavy import
    return folder


def shard_files(folder: Path) -> List[Path]:
    """``consolidated.NN.pth`` in order; a lone differently named ``*.pth`` is accepted too."""
    pths = sorted(folder.glob("*.pth"))
    if not pths:
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise ModelLoadError(Errors.E172.format(path=str(folder), found=found or "nothing"))
    numbered = {int(m.group(1)): p for p in pths if (m := _SHARD_RE.match(p.name))}
    if not numbered:
        if len(pths) == 1:
            return pths
        raise ModelLoadError(Errors.E173.format(path=str(folder), names=[p.name for p in pths]))
    missing = [i for i in range(max(numbered) + 1) if i not in numbered]
    if missing:
        names = ", ".join(f"consolidated.{i:02d}.pth" for i in missing)
        found_names = [numbered[i].name for i in sorted(numbered)]
        raise ModelLoadError(Errors.E174.format(path=str(folder), missing=names, found=found_names))
    return [numbered[i] for i in sorted(numbered)]


def load_shard(file: Path) -> Dict[str, torch.Tensor]:
    """Open one shard lazily (mmap) and safely (weights_only): tensors and nothing else."""
    import torch

    try:
        obj = torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(Errors.E175.format(path=str(file), error=first)) from e
    except RuntimeError as e:
        if "_use_new_zipfile_serialization" in str(e):
            raise ModelLoadError(Errors.E176.format(path=str(file))) from e
        raise _unreadable(file, e) from e
    except (EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _unreadable(file, e) from e
    return _only_tensors(file, obj)


def _unreadable(file: Path, e: BaseException) -> ModelLoadError:
    first = str(e).splitlines()[0] if str(e) else ""
    return ModelLoadError(Errors.E177.format(path=str(file), error=f"{type(e).__name__}: {first}"))


def _only_tensors(file: Path, obj: Any) -> Dict[str, torch.Tensor]:
    """weights_only still admits ints, lists and dicts: Meta shards hold tensors only."""
    import torch

    if not isinstance(obj, dict):
        raise ModelLoadError(Errors.E178.format(path=str(file), kind=type(obj).__name__))
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise ModelLoadError(Errors.E179.format(path=str(file), keys=bad[:5]))
    return {k: v for k, v in obj.items() if k not in _IGNORED_KEYS}


@dataclass
class ShardSet:
    """The opened shards of one checkpoint, with the files they came from (for messages)."""

    files: List[Path]
    tensors: List[Dict[str, torch.Tensor]]
    mapped: List[Tuple[int, int]] = field(default_factory=list)  # see paging.drop_pages

    @property
    def folder(self) -> Path:
        return self.files[0].parent

    def parts(self, key: str) -> List[torch.Tensor]:
        return [t[key] for t in self.tensors]


def check_shards(shards: ShardSet) -> None:
    """Same keys and same shapes in every shard (shape checks read no tensor data)."""
    keys0 = set(shards.tensors[0])
    for file, tensors in zip(shards.files[1:], shards.tensors[1:]):
        if set(tensors) != keys0:
            missing = sorted(keys0 - set(tensors))[:5]
            extra = sorted(set(tensors) - keys0)[:5]
            raise ModelLoadError(
                Errors.E180.format(
                    path=str(file), first=shards.files[0].name, missing=missing, extra=extra
                )
            )
    for key in sorted(keys0):
        shapes = [tuple(t[key].shape) for t in shards.tensors]
        if len(set(shapes)) != 1:
            per_file = ", ".join(f"{f.name}: {s}" for f, s in zip(shards.files, shapes))
            raise ModelLoadError(
                Errors.E181.format(key=key, folder=str(shards.folder), shapes=per_file)
            )
