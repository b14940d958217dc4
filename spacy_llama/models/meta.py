"""``spacy-llama.Meta.v1``: Meta's own checkpoint folders (``consolidated.NN.pth``).

A Meta download holds model-parallel shards (``consolidated.00.pth``, ``.01.pth``...), a
``params.json`` and a ``tokenizer.model``. Meta's reference code needs ``torchrun`` with one
process per shard; we merge the shards in one process instead, apply the rotary permutation
transformers expects for q/k, and hand the tensors to a ``LlamaForCausalLM`` built without
allocating weights of its own. No torch.distributed, fairscale or torchrun on this path.

Memory: shards are opened with ``mmap=True`` (nothing is read up front) and each merged tensor
is written into one fresh buffer; the source pages are then dropped from our address space, so
the peak stays near one copy of the weights (see benchmarks/meta_load_memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import mmap
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from ..registry import llama_models
from .base import DTypeName, LlamaModel, ModelLoadError
from .hf import cached_load, finish_model, load_hf_folder

if TYPE_CHECKING:  # pragma: no cover
    import torch

_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
_IGNORED_KEYS = ("rope.freqs",)

# Context lengths Meta trained each family with (params.json does not say).
CONTEXT_LENGTHS = {
    "llama1": 2048,
    "llama2": 4096,
    "codellama": 16384,
    "llama3": 8192,
    "llama3.1": 131072,
}


@llama_models("spacy-llama.Meta.v1")
def meta_model_v1(
    path: Union[str, Path],
    *,
    tokenizer_path: Optional[Union[str, Path]] = None,
    device: str = "auto",
    dtype: DTypeName = "auto",
    device_map: Optional[str] = None,
    context_length: Optional[int] = None,
) -> LlamaModel:
    """Load a Meta LLaMA checkpoint folder (Llama 1, 2, 3, 3.1, 3.2, Code Llama)."""
    folder = check_meta_folder(path)
    tok = Path(tokenizer_path).expanduser() if tokenizer_path is not None else None
    key = ("meta", str(folder.resolve()), str(tok), device, dtype, device_map, context_length)
    return cached_load(
        key,
        lambda: load_meta_folder(
            folder,
            tokenizer_path=tok,
            device=device,
            dtype=dtype,
            device_map=device_map,
            context_length=context_length,
        ),
    )


# -- params.json -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaParams:
    """The fields of Meta's params.json that shape the model (unknown keys are ignored)."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int  # -1: take it from the embedding
    multiple_of: int
    ffn_dim_multiplier: Optional[float]
    norm_eps: float
    rope_theta: float
    use_scaled_rope: bool
    rope_scaling_factor: Optional[float]

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """Meta's FeedForward hidden size (model.py: 2/3 of 4*dim, scaled, rounded up)."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def family(self, *, tiktoken: bool) -> str:
        """Which release this is, for the context length Meta trained it with."""
        if self.use_scaled_rope:
            return "llama3.1"
        if tiktoken or self.vocab_size >= 128000 or self.rope_theta == 500000.0:
            return "llama3"
        if self.rope_theta >= 1e6:
            return "codellama"
        # Llama 1 shipped norm_eps 1e-6; Llama 2 changed it to 1e-5.
        return "llama1" if self.norm_eps <= 1e-6 else "llama2"


def read_params(folder: Path) -> MetaParams:
    file = folder / "params.json"
    if not file.exists():
        raise ModelLoadError(
            f"{str(folder)!r} has consolidated.*.pth shards but no params.json. Copy params.json "
            "from the same Meta download into the folder (it holds dim, n_layers, n_heads...)."
        )
    try:
        raw = json.loads(file.read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"{str(file)!r} is not valid JSON ({e}). Copy params.json from the Meta download again."
        ) from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{str(file)!r} must hold a JSON object, got {type(raw).__name__}.")
    try:
        return _params_from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"{str(file)!r} is malformed: {e}. It needs integers dim, n_layers, n_heads (and "
            "optionally n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier, norm_eps, "
            "rope_theta, use_scaled_rope). Copy params.json from the Meta download again."
        ) from e


def _params_from_dict(raw: Dict[str, Any]) -> MetaParams:
    def need_int(name: str) -> int:
        if name not in raw:
            raise KeyError(f"missing {name!r}")
        return _as_int(name, raw[name])

    n_heads = need_int("n_heads")
    mult = raw.get("ffn_dim_multiplier")
    scale = raw.get("rope_scaling_factor")
    params = MetaParams(
        dim=need_int("dim"),
        n_layers=need_int("n_layers"),
        n_heads=n_heads,
        n_kv_heads=_as_int("n_kv_heads", raw.get("n_kv_heads") or n_heads),
        vocab_size=_as_int("vocab_size", raw.get("vocab_size", -1)),
        multiple_of=_as_int("multiple_of", raw.get("multiple_of", 256)),
        ffn_dim_multiplier=None if mult is None else float(mult),
        norm_eps=float(raw.get("norm_eps", 1e-5)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        use_scaled_rope=bool(raw.get("use_scaled_rope", False)),
        rope_scaling_factor=None if scale is None else float(scale),
    )
    if (
        params.dim % n_heads
        or n_heads % params.n_kv_heads
        or params.multiple_of < 1
        or params.n_layers < 1
    ):
        raise ValueError(
            f"dim={params.dim}, n_heads={n_heads}, n_kv_heads={params.n_kv_heads}, "
            f"multiple_of={params.multiple_of}, n_layers={params.n_layers} do not fit together"
        )
    return params


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name!r} must be an integer, got {value!r}")
    return value


# -- the folder and its shards ---------------------------------------------------------------


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


# -- merging shards into transformers' layout ------------------------------------------------

# Meta name suffix -> (transformers name suffix, concatenation dim; None = replicated).
_LAYER_MAP: Dict[str, Tuple[str, Optional[int]]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
_TOP_MAP: Dict[str, Tuple[str, Optional[int]]] = {
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}


@dataclass
class ShardSet:
    """The opened shards of one checkpoint, with the files they came from (for messages)."""

    files: List[Path]
    tensors: List[Dict[str, torch.Tensor]]
    mapped: List[Tuple[int, int]] = field(default_factory=list)  # see drop_pages

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


def merge_shards(
    shards: ShardSet, params: MetaParams, *, dtype: Optional[torch.dtype]
) -> Dict[str, torch.Tensor]:
    """Meta's shards -> one transformers state dict (q/k permuted), one tensor at a time."""
    check_shards(shards)
    state: Dict[str, torch.Tensor] = {}
    state["model.embed_tokens.weight"] = _merge(
        shards.parts("tok_embeddings.weight"),
        _embedding_dim(shards, params),
        dtype,
        shards.mapped,
    )
    for meta_key, (hf_key, dim) in _TOP_MAP.items():
        if meta_key in shards.tensors[0]:
            state[hf_key] = _merge(shards.parts(meta_key), dim, dtype, shards.mapped)
    for layer in range(params.n_layers):
        for suffix, (hf_suffix, dim) in _LAYER_MAP.items():
            meta_key = f"layers.{layer}.{suffix}"
            if meta_key not in shards.tensors[0]:
                raise ModelLoadError(
                    f"{str(shards.files[0])!r} has no {meta_key!r}, but params.json says "
                    f"n_layers={params.n_layers}. params.json belongs to another model."
                )
            parts = shards.parts(meta_key)
            if suffix in ("attention.wk.weight", "attention.wv.weight"):
                parts = _dedup_kv(parts, shards, meta_key, params)
            tensor = _merge(parts, dim, dtype, shards.mapped)
            if suffix == "attention.wq.weight":
                tensor = permute_rotary(tensor, params.n_heads)
            elif suffix == "attention.wk.weight":
                tensor = permute_rotary(tensor, params.n_kv_heads)
            state[f"model.layers.{layer}.{hf_suffix}"] = tensor
    check_shapes(state, params, shards.folder)
    return state


def _embedding_dim(shards: ShardSet, params: MetaParams) -> Optional[int]:
    """Llama 1/2 split the embedding by columns (dim 1), Llama 3 by rows (dim 0)."""
    if len(shards.files) == 1:
        return None
    cols = shards.tensors[0]["tok_embeddings.weight"].shape[1]
    if cols == params.dim:
        return 0
    if cols * len(shards.files) == params.dim:
        return 1
    raise ModelLoadError(
        f"tok_embeddings.weight in {str(shards.files[0])!r} has {cols} columns; with "
        f"{len(shards.files)} shards and dim={params.dim} (params.json) expected {params.dim} "
        f"or {params.dim // len(shards.files)}. params.json belongs to another model."
    )


def _dedup_kv(
    parts: List[torch.Tensor], shards: ShardSet, key: str, params: MetaParams
) -> List[torch.Tensor]:
    """With more shards than kv heads, each kv head is replicated over consecutive shards."""
    import torch

    rows = params.n_kv_heads * params.head_dim
    total = sum(p.shape[0] for p in parts)
    if total == rows:
        return parts
    repeat = total // rows
    if total % rows or len(parts) % repeat:
        raise ModelLoadError(
            f"{key!r} has {total} rows over {len(parts)} shards in {str(shards.folder)!r}; "
            f"n_kv_heads={params.n_kv_heads} x head_dim={params.head_dim} (params.json) needs "
            f"{rows}. params.json and the shards do not belong together."
        )
    kept = parts[::repeat]
    for i, part in enumerate(parts):
        if i % repeat == 0:
            continue
        if not torch.equal(part, kept[i // repeat]):
            raise ModelLoadError(
                f"{key!r}: {shards.files[i].name} should replicate the kv head of "
                f"{shards.files[i - i % repeat].name} ({len(parts)} shards, "
                f"{params.n_kv_heads} kv heads) but differs. The checkpoint is corrupt."
            )
        drop_pages(part, shards.mapped)
    return kept


def _merge(
    parts: List[torch.Tensor],
    dim: Optional[int],
    dtype: Optional[torch.dtype],
    mapped: List[Tuple[int, int]],
) -> torch.Tensor:
    """Copy the parts into one new buffer (converting dtype on the way), then drop their pages."""
    import torch

    target = dtype or parts[0].dtype
    if dim is None:
        parts = parts[:1]
        dim = 0
    shape = list(parts[0].shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    out = torch.empty(shape, dtype=target)
    offset = 0
    for part in parts:
        out.narrow(dim, offset, part.shape[dim]).copy_(part)
        offset += part.shape[dim]
        drop_pages(part, mapped)
    return out


def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta interleaves rotary pairs (0,1),(2,3)...; transformers rotates halves."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def check_shapes(state: Dict[str, torch.Tensor], params: MetaParams, folder: Path) -> None:
    """The merged tensors must match params.json (FFN size computed as Meta does)."""
    q = params.n_heads * params.head_dim
    kv = params.n_kv_heads * params.head_dim
    vocab = state["model.embed_tokens.weight"].shape[0]
    expected = {
        "model.embed_tokens.weight": (
            params.vocab_size if params.vocab_size > 0 else vocab,
            params.dim,
        ),
        "model.layers.0.self_attn.q_proj.weight": (q, params.dim),
        "model.layers.0.self_attn.k_proj.weight": (kv, params.dim),
        "model.layers.0.self_attn.o_proj.weight": (params.dim, q),
        "model.layers.0.mlp.gate_proj.weight": (params.ffn_dim, params.dim),
        "model.layers.0.mlp.down_proj.weight": (params.dim, params.ffn_dim),
    }
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise ModelLoadError(
                f"{key} merged from {str(folder)!r} has shape {got}, but params.json implies "
                f"{shape} (dim={params.dim}, n_heads={params.n_heads}, n_kv_heads="
                f"{params.n_kv_heads}, ffn size {params.ffn_dim} from multiple_of="
                f"{params.multiple_of}, ffn_dim_multiplier={params.ffn_dim_multiplier}). "
                "params.json belongs to another model: copy the one from the same download."
            )


def _libc_madvise() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - exotic libc
        return None
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MADVISE = _libc_madvise()


def file_mappings(files: List[Path]) -> List[Tuple[int, int]]:
    """Address ranges where ``files`` are mapped in this process (from /proc/self/maps)."""
    if _MADVISE is None:
        return []
    names = {str(f.resolve()) for f in files}
    ranges: List[Tuple[int, int]] = []
    try:
        with open("/proc/self/maps", encoding="utf8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in names:
                    start, end = fields[0].split("-")
                    ranges.append((int(start, 16), int(end, 16)))
    except OSError:  # pragma: no cover - no procfs
        return []
    merged: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):  # one mapping may be listed as adjacent pieces
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def drop_pages(t: torch.Tensor, mapped: List[Tuple[int, int]]) -> None:
    """Give back the resident pages of an mmapped shard tensor we have finished copying.

    Only for memory inside ``mapped`` (the shard files' own mappings): those pages are clean
    and file-backed (MAP_PRIVATE, never written), so the kernel re-reads them from the file
    if they are touched again; anonymous memory would be zeroed, so it is never touched.
    Without this, the whole checkpoint stays resident next to the merged copy until the last
    shard is closed (peak = 2x, see benchmarks/meta_load_memory.py)."""
    if _MADVISE is None:
        return
    storage = t.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    page = mmap.PAGESIZE
    lo = (start + page - 1) // page * page
    hi = (start + size) // page * page
    if hi > lo and any(a <= lo and hi <= b for a, b in mapped):
        _MADVISE(lo, hi - lo, mmap.MADV_DONTNEED)


# -- tokenizer -------------------------------------------------------------------------------


def tokenizer_files(folder: Path, tokenizer_path: Optional[Path]) -> List[Path]:
    """Meta's tokenizer.model (file or a folder holding it) or a Hugging Face tokenizer folder."""
    where = tokenizer_path or folder
    if where.is_file():
        return [where]
    if (where / "tokenizer.model").is_file() and not (where / "tokenizer.json").is_file():
        return [where / "tokenizer.model"]
    hf = [where / n for n in ("tokenizer.json", "tokenizer_config.json") if (where / n).is_file()]
    if tokenizer_path is not None and hf:
        return hf
    if (where / "tokenizer.model").is_file():
        return [where / "tokenizer.model"]
    raise ModelLoadError(
        f"No tokenizer.model in {str(where)!r}. Copy tokenizer.model from the Meta download "
        "into the folder, or set `tokenizer_path` to it (or to a Hugging Face tokenizer folder)."
    )


def load_tokenizer(files: List[Path], *, variant: str) -> Tuple[Any, List[int]]:
    from .tokenizers import load_meta_tokenizer

    if files[0].name == "tokenizer.json" or files[0].name == "tokenizer_config.json":
        return _hf_tokenizer(files[0].parent)
    return load_meta_tokenizer(files[0], llama3_variant=variant)


def _hf_tokenizer(folder: Path) -> Tuple[Any, List[int]]:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"Could not load a tokenizer from {str(folder)!r}: {e}") from e
    stops = [tok.eos_token_id] + [
        tok.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|eom_id|>") if t in tok.get_vocab()
    ]
    return tok, [int(i) for i in stops if i is not None]


# -- putting it together ---------------------------------------------------------------------


@dataclass
class MetaCheckpoint:
    """A merged checkpoint: the transformers model, its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    stop_ids: List[int]
    files: List[Path]


def build_meta(
    folder: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    dtype: Optional[torch.dtype] = None,
    context_length: Optional[int] = None,
) -> MetaCheckpoint:
    """Read, merge and assemble a Meta folder on CPU; ``dtype=None`` keeps the checkpoint's."""
    from .tokenizers import detect_format

    files = shard_files(folder)
    params = read_params(folder)
    tok_files = tokenizer_files(folder, tokenizer_path)
    tiktoken = tok_files[0].name not in ("tokenizer.json", "tokenizer_config.json") and (
        detect_format(tok_files[0]) == "tiktoken"
    )
    family = params.family(tiktoken=tiktoken)
    tokenizer, stops = load_tokenizer(tok_files, variant="3.1" if family == "llama3.1" else "3")
    tensors = [load_shard(f) for f in files]
    shards = ShardSet(files=files, tensors=tensors, mapped=file_mappings(files))
    del tensors
    check_shards(shards)
    check_vocab(tokenizer, _embedding_rows(shards, params), tok_files[0], folder)
    state = merge_shards(shards, params, dtype=dtype)
    del shards  # closes the mmaps
    vocab = state["model.embed_tokens.weight"].shape[0]
    tied = _untie_duplicate_output(state)
    config = hf_config(
        params,
        vocab_size=vocab,
        family=family,
        tied=tied,
        tokenizer=tokenizer,
        context_length=context_length,
        dtype=state["model.embed_tokens.weight"].dtype,
    )
    model = assemble(config, state)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    return MetaCheckpoint(model, tokenizer, stops, [*files, folder / "params.json", *tok_files])


def _embedding_rows(shards: ShardSet, params: MetaParams) -> int:
    """The vocabulary size, from the shards' shapes alone (no tensor data is read)."""
    rows = int(shards.tensors[0]["tok_embeddings.weight"].shape[0])
    return rows * len(shards.files) if _embedding_dim(shards, params) == 0 else rows


def check_vocab(tokenizer: Any, rows: int, tok_file: Path, folder: Path) -> None:
    """Checked before merging, so a wrong tokenizer fails in seconds, not minutes."""
    if len(tokenizer) != rows:
        raise ModelLoadError(
            f"The tokenizer {str(tok_file)!r} has {len(tokenizer)} tokens but the embedding "
            f"in {str(folder)!r} has {rows} rows. The tokenizer belongs to another model: use "
            "the tokenizer.model from the same download (or fix `tokenizer_path`)."
        )


def _untie_duplicate_output(state: Dict[str, torch.Tensor]) -> bool:
    """Llama 3.2 1B/3B share embedding and output: no output.weight, or an identical copy."""
    import torch

    out = state.get("lm_head.weight")
    if out is None:
        return True
    if torch.equal(out, state["model.embed_tokens.weight"]):
        del state["lm_head.weight"]
        return True
    return False


def hf_config(
    params: MetaParams,
    *,
    vocab_size: int,
    family: str,
    tied: bool,
    tokenizer: Any,
    context_length: Optional[int],
    dtype: torch.dtype,
) -> Any:
    from transformers import LlamaConfig

    rope_scaling = None
    if params.use_scaled_rope:
        # Llama 3.2's tied small models used factor 32, 3.1 factor 8 (params.json omits it).
        factor = params.rope_scaling_factor or (32.0 if tied else 8.0)
        rope_scaling = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=params.dim,
        intermediate_size=params.ffn_dim,
        num_hidden_layers=params.n_layers,
        num_attention_heads=params.n_heads,
        num_key_value_heads=params.n_kv_heads,
        max_position_embeddings=context_length or CONTEXT_LENGTHS[family],
        rms_norm_eps=params.norm_eps,
        rope_theta=params.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype=dtype,
    )


def assemble(config: Any, state: Dict[str, torch.Tensor]) -> Any:
    """A LlamaForCausalLM whose parameters *are* ``state`` (no random init, no second copy)."""
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():  # parameters on the meta device; buffers (rotary) real
        model = LlamaForCausalLM(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [
        k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")
    ]
    if missing or result.unexpected_keys:  # pragma: no cover - guarded by check_shapes
        raise ModelLoadError(
            f"Internal mapping error: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}."
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def load_meta_folder(
    folder: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: Optional[str] = None,
    context_length: Optional[int] = None,
) -> LlamaModel:
    from .placement import place, resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if device_map is not None:  # pragma: no cover - multi-GPU
        return _load_with_device_map(
            folder,
            tokenizer_path=tokenizer_path,
            dtype=dtype,
            device_map=device_map,
            context_length=context_length,
        )
    ckpt = build_meta(
        folder, tokenizer_path=tokenizer_path, dtype=torch_dtype, context_length=context_length
    )
    model = place(ckpt.model, torch_device, torch_dtype)
    return finish_model(
        model,
        ckpt.tokenizer,
        name=folder.name,
        source=str(folder),
        fingerprint_files=ckpt.files,
        extra_stop_ids=ckpt.stop_ids,
    )


def _load_with_device_map(
    folder: Path,
    *,
    tokenizer_path: Optional[Path],
    dtype: str,
    device_map: str,
    context_length: Optional[int],
) -> LlamaModel:  # pragma: no cover - multi-GPU
    """accelerate's dispatch works from a saved folder: convert to a temporary one first."""
    tmp = Path(tempfile.mkdtemp(prefix="spacy-llama-meta-"))
    try:
        files = convert_meta(
            folder, tmp / "hf", tokenizer_path=tokenizer_path, context_length=context_length
        )
        return load_hf_folder(
            tmp / "hf",
            dtype=dtype,
            device_map=device_map,
            name=folder.name,
            source=str(folder),
            fingerprint_files=files,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_meta(
    folder: Path,
    dest: Path,
    *,
    tokenizer_path: Optional[Path] = None,
    dtype: Optional[torch.dtype] = None,
    context_length: Optional[int] = None,
) -> List[Path]:
    """Write a Meta folder as a Hugging Face folder (safetensors + tokenizer); returns the
    source files. ``dtype=None`` keeps the checkpoint's dtype (usually bfloat16)."""
    ckpt = build_meta(
        check_meta_folder(folder),
        tokenizer_path=tokenizer_path,
        dtype=dtype,
        context_length=context_length,
    )
    ckpt.model.save_pretrained(str(dest), safe_serialization=True)
    ckpt.tokenizer.save_pretrained(str(dest))
    return ckpt.files
