"""What every loader returns: a loaded causal LM, its tokenizer and what the engine needs.

Models never see a Doc. The engine talks to a model only through this dataclass.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Literal, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

DeviceName = str  # "auto", "cpu", "cuda", "cuda:1", "mps"
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class LlamaModel:
    """A loaded LLaMA-family causal LM plus everything the engine needs to drive it."""

    model: Any  # a transformers PreTrainedModel (torch.nn.Module)
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    name: str
    source: str  # where the weights came from (path), for messages
    context_length: int
    stop_token_ids: List[int]
    pad_token_id: int
    fingerprint_files: List[Path] = field(default_factory=list)
    extra_fingerprint: str = ""
    _fingerprint: Optional[str] = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def fingerprint(self) -> str:
        """A hash of the weights' identity (file contents, not names) and the dtype."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for path in sorted(self.fingerprint_files):
                h.update(file_digest(path).encode())
            if not self.fingerprint_files:
                h.update(_tensor_digest(self.model).encode())
            h.update(self.extra_fingerprint.encode())
            h.update(str(self.dtype).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # -- tokenizer helpers (kept here so tasks never import transformers) --
    def encode(self, text: str, *, add_special_tokens: bool = True) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def count_tokens(self, text: str, *, add_special_tokens: bool = True) -> int:
        return len(self.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, user: str, system: Optional[str]) -> str:
        if not self.has_chat_template:
            raise ValueError(
                f"The model at {self.source} has no chat template, so `chat = true` cannot be "
                "used. Set `chat = false` in [components.llama.task] or load a tokenizer "
                "that has one."
            )
        messages: List[Dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return str(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )


_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's contents, memoised per (path, size, mtime) in this process."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                block = f.read(chunk)
                if not block:
                    break
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _tensor_digest(module: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
