"""What every loader returns: a loaded causal LM, its tokenizer and what the engine needs.

Models never see a Doc. The engine talks to a model only through this dataclass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Literal, Optional, Tuple

from ..errors import Errors, ModelLoadError
from .fingerprint import FileStamp, changed_files, file_digest, loaded_state_digest

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
    # Taken when the model was loaded (by loading.finish_model): the digest of what was
    # loaded, and the versions of fingerprint_files then (the digests are taken lazily).
    loaded_state: str = ""
    loaded_stamps: Tuple[FileStamp, ...] = ()
    # A digest of trained adapter weights merged into ``model`` ("" without an adapter).
    adapter_digest: str = ""
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
        """A hash of everything that decides the answers: the contents (not the names or
        location) of the files the model was loaded from, what was loaded (configs and
        tokenizer, see :func:`.fingerprint.loaded_state_digest`), and the dtype."""
        if self._fingerprint is None:
            changed = changed_files(self.loaded_stamps)
            if changed:
                raise ModelLoadError(Errors.E100.format(source=self.source, files=changed))
            h = hashlib.sha256()
            for digest in sorted(file_digest(path) for path in self.fingerprint_files):
                h.update(digest.encode())
            if not self.fingerprint_files:
                h.update(_tensor_digest(self.model).encode())
            state = self.loaded_state or loaded_state_digest(self.model, self.tokenizer)
            h.update(state.encode())
            h.update(self.extra_fingerprint.encode())
            h.update(str(self.dtype).encode())
            if self.adapter_digest:  # unchanged fingerprints (cache keys) without adapters
                h.update(b"adapter:" + self.adapter_digest.encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def set_adapter_digest(self, digest: str) -> None:
        """The adapter weights merged into ``model`` changed: so does the fingerprint."""
        self.adapter_digest = digest
        self._fingerprint = None

    # -- tokenizer helpers (kept here so tasks never import transformers) --
    def encode(self, text: str, *, add_special_tokens: bool = True) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def count_tokens(self, text: str, *, add_special_tokens: bool = True) -> int:
        return len(self.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, user: str, system: Optional[str]) -> str:
        if not self.has_chat_template:
            raise ValueError(Errors.E450.format(source=self.source))
        messages: List[Dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return str(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )


def _tensor_digest(module: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
