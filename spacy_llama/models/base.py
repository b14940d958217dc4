"""What every loader returns: a loaded causal LM, its tokenizer and what the engine needs.

Models never see a Doc. The engine talks to a model only through this dataclass.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Literal, Optional, Sequence, Tuple

from ..errors import Errors, ModelLoadError, TemplateError
from ..rendering import (
    TEMPLATE_CHARS,
    TEMPLATE_SECONDS,
    BudgetExceeded,
    ImmutableBudgetedSandbox,
    render_budgeted,
    time_budget,
)
from .fingerprint import FileStamp, changed_files, file_digest, loaded_state_digest

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from typing_extensions import TypeIs

DeviceName = str  # "auto", "cpu", "cuda", "cuda:1", "mps"
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


class LanguageModel:
    """What the engine, the prompt formatter and the tasks need of any model, wherever it
    computes: its tokenizer, context length, stop tokens and a fingerprint of everything
    that decides its answers. :class:`LoadedModel` holds its weights here; a served model
    (``models/server``'s ``ServerModel``) has none, and the engine picks its backend from
    :func:`has_local_weights` once, when it is built."""

    tokenizer: Any  # a transformers PreTrainedTokenizerBase (a served model's may be None)
    name: str
    source: str  # where the weights are (a path, a URL), for messages
    context_length: int
    stop_token_ids: List[int]

    @property
    def fingerprint(self) -> str:  # pragma: no cover - every model defines its own
        raise NotImplementedError

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # -- tokenizer helpers (kept here so tasks never import transformers) --
    def encode(self, text: str, *, add_special_tokens: bool = True) -> List[int]:
        """Token ids of ``text``. The user text of a :class:`~spacy_llama.types.Prompt`
        (its ``text_spans``) is encoded as text: a control string there (``<|im_end|>``, the
        EOS string) does not become a control token. Only a prompt whose user text holds
        one is encoded in pieces; any other is encoded whole, as it always was."""
        spans = getattr(text, "text_spans", ())
        if spans and self.tokenizer is not None:
            hits = control_strings_in(str(text), spans, special_strings(self.tokenizer))
            if hits:
                return guarded_encode(self.tokenizer, str(text), spans, add_special_tokens)
        return list(self.tokenizer(str(text), add_special_tokens=add_special_tokens)["input_ids"])

    def count_tokens(self, text: str, *, add_special_tokens: bool = True) -> int:
        return len(self.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, user: str, system: Optional[str]) -> str:
        if not self.has_chat_template:
            raise TemplateError(Errors.E450.format(source=self.source))
        messages: List[Dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        try:
            check_chat_template(self.tokenizer)
            with time_budget():
                out = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
        except BudgetExceeded as e:
            raise TemplateError(
                Errors.E614.format(
                    source=self.source, reason=e, seconds=TEMPLATE_SECONDS, chars=TEMPLATE_CHARS
                )
            ) from None
        if len(out) > TEMPLATE_CHARS:
            reason = f"its output has {len(out)} characters"
            raise TemplateError(
                Errors.E614.format(
                    source=self.source,
                    reason=reason,
                    seconds=TEMPLATE_SECONDS,
                    chars=TEMPLATE_CHARS,
                )
            )
        return str(out)


@dataclass
class LoadedModel(LanguageModel):
    """A loaded LLaMA-family causal LM plus everything the engine needs to drive it.

    Named for what it is (not ``transformers.LlamaModel``, the decoder stack inside
    ``model``); :data:`LlamaModel` stays as an alias so custom loaders keep working.
    """

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


def has_local_weights(model: object) -> TypeIs[LoadedModel]:
    """Whether ``model``'s weights are here (a :class:`LoadedModel`): what decoding on this
    machine, scoring, listener features and adapters need. The one question every room asks;
    anything else the engine is given decodes on a server."""
    return isinstance(model, LoadedModel)


# The dataclass's name until 0.x; custom loaders written against it keep working.
LlamaModel = LoadedModel


def _tensor_digest(module: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def special_strings(tokenizer: Any) -> List[str]:
    """The text of every control token the tokenizer parses out of a string."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            found.add(str(added.content))
    return sorted((s for s in found if s), key=len, reverse=True)


def control_strings_in(
    text: str, spans: Sequence[Tuple[int, int]], specials: Sequence[str]
) -> List[str]:
    """The control strings that overlap a user-text span of ``text``."""
    hits = []
    for special in specials:
        start = text.find(special)
        while start >= 0:
            end = start + len(special)
            if any(a < end and start < b for a, b in spans):
                hits.append(special)
                break
            start = text.find(special, start + 1)
    return hits


def guarded_encode(
    tokenizer: Any, text: str, spans: Sequence[Tuple[int, int]], add_special_tokens: bool
) -> List[int]:
    """Encode ``text`` in pieces: the template's own text with control strings parsed, the
    user text with them split into ordinary tokens; then the tokens the tokenizer adds
    around a text (BOS) when ``add_special_tokens``."""
    ids: List[int] = []
    cuts = sorted({0, len(text), *(p for span in spans for p in span if 0 <= p <= len(text))})
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        if not piece:
            continue
        user = any(s <= a and b <= e for s, e in spans)
        enc = tokenizer(piece, add_special_tokens=False, split_special_tokens=user)
        ids.extend(enc["input_ids"])
    if not add_special_tokens:
        return ids
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k] + ids + full[k + len(plain) :]
    return ids


_CHECKED_CHAT_TEMPLATES: Dict[str, bool] = {}


def check_chat_template(tokenizer: Any) -> None:
    """Render a chat template once, in a budgeted sandbox like transformers' own, before
    transformers renders it (in a sandbox without a size budget): a template that builds a
    huge value raises BudgetExceeded here instead of allocating it. A template this
    rehearsal cannot render (an extension of transformers') is left to transformers, under
    the time budget."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or template in _CHECKED_CHAT_TEMPLATES:
        return
    env = ImmutableBudgetedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    context: Dict[str, Any] = dict(getattr(tokenizer, "special_tokens_map", {}) or {})
    context.update(
        messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "x"}],
        add_generation_prompt=True,
    )
    try:
        compiled = env.from_string(template)
        render_budgeted(compiled, context)
    except BudgetExceeded:
        raise
    except Exception:  # noqa: S110 - transformers' own rendering decides
        pass
    _CHECKED_CHAT_TEMPLATES[template] = True
