"""The checkpoint folder and its model-parallel shards: finding, opening (lazily and
safely) and checking that the ``consolidated.NN.pth`` files belong together."""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple, Union

from ...errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
_IGNORED_KEYS = ("rope.freqs",)


def check_meta_folder(path: Union[str, Path]) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(
            f"Meta checkpoint path {str(folder)!r} does not exist. Set `path` in "
            "[components.llama.model] to the folder holding consolidated.00.pth, params.json "
            "and tokenizer.model."
        )
    if not folder.is_dir():
        raise ModelLoadError(
            f"Meta checkpoint path {str(folder)!r} is a file; point `path` at the folder that "
            "holds consolidated.*.pth, params.json and tokenizer.model."
        )
    shard_files(folder)  # fail early, before any heavy import
    return folder


def shard_files(folder: Path) -> List[Path]:
    """``consolidated.NN.pth`` in order; a lone differently named ``*.pth`` is accepted too."""
    pths = sorted(folder.glob("*.pth"))
    if not pths:
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise ModelLoadError(
            f"{str(folder)!r} holds no *.pth checkpoint shards (found: {found or 'nothing'}). "
            "spacy-llama.Meta.v1 needs Meta's consolidated.00.pth (.01.pth...), params.json and "
            "tokenizer.model; for a Hugging Face folder use spacy-llama.HF.v1, for a .gguf "
            "file spacy-llama.GGUF.v1."
        )
    numbered = {int(m.group(1)): p for p in pths if (m := _SHARD_RE.match(p.name))}
    if not numbered:
        if len(pths) == 1:
            return pths
        raise ModelLoadError(
            f"{str(folder)!r} holds several *.pth files but none named consolidated.NN.pth: "
            f"{[p.name for p in pths]}. Keep only Meta's shards in the folder."
        )
    missing = [i for i in range(max(numbered) + 1) if i not in numbered]
    if missing:
        names = ", ".join(f"consolidated.{i:02d}.pth" for i in missing)
        raise ModelLoadError(
            f"{str(folder)!r} is missing shard(s) {names} (found "
            f"{[numbered[i].name for i in sorted(numbered)]}). A model-parallel checkpoint "
            "needs every shard: download the missing ones."
        )
    return [numbered[i] for i in sorted(numbered)]


def load_shard(file: Path) -> Dict[str, torch.Tensor]:
    """Open one shard lazily (mmap) and safely (weights_only): tensors and nothing else."""
    import torch

    try:
        obj = torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelLoadError(
            f"Refusing to load {str(file)!r}: it contains Python objects other than tensors, "
            "which could run code when unpickled. Meta's shards hold only tensors; re-download "
            f"the checkpoint from a trusted source. (torch said: {str(e).splitlines()[0]})"
        ) from e
    except RuntimeError as e:
        if "_use_new_zipfile_serialization" in str(e):
            raise ModelLoadError(
                f"{str(file)!r} uses torch's legacy (pre-1.6) serialization, which cannot be "
                "memory-mapped. Re-save it once: torch.save(torch.load(f, weights_only=True), f)."
            ) from e
        raise _unreadable(file, e) from e
    except (EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _unreadable(file, e) from e
    return _only_tensors(file, obj)


def _unreadable(file: Path, e: BaseException) -> ModelLoadError:
    first = str(e).splitlines()[0] if str(e) else ""
    return ModelLoadError(
        f"Could not read {str(file)!r} ({type(e).__name__}: {first}). The file is truncated "
        "or corrupt (an interrupted download?); download it again and check it against "
        "Meta's checklist.chk."
    )


def _only_tensors(file: Path, obj: Any) -> Dict[str, torch.Tensor]:
    """weights_only still admits ints, lists and dicts: Meta shards hold tensors only."""
    import torch

    if not isinstance(obj, dict):
        raise ModelLoadError(
            f"Refusing {str(file)!r}: expected a mapping of parameter names to tensors, got "
            f"{type(obj).__name__}. Is this a Meta consolidated.*.pth shard?"
        )
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise ModelLoadError(
            f"Refusing {str(file)!r}: entries {bad[:5]} are not tensors. A Meta shard holds only "
            "parameter tensors (training checkpoints with optimizer state are not supported)."
        )
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
                f"Shard {str(file)!r} does not match {shards.files[0].name}: missing keys "
                f"{missing}, extra keys {extra}. The shards come from different checkpoints; "
                "download the folder again."
            )
    for key in sorted(keys0):
        shapes = [tuple(t[key].shape) for t in shards.tensors]
        if len(set(shapes)) != 1:
            per_file = ", ".join(f"{f.name}: {s}" for f, s in zip(shards.files, shapes))
            raise ModelLoadError(
                f"Inconsistent shapes for {key!r} across the shards in {str(shards.folder)!r} "
                f"({per_file}). The shards come from different checkpoints or a different "
                "model-parallel split; download the folder again."
            )
