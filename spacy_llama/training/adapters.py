"""A component's LoRA adapter (peft): its own module trees, merging, digest, save and load.

The loaded model is cached per process and shared by every pipeline on it
(``models/loading.cached_load``), so an adapter never touches it. It builds two module trees
of its own that *share the frozen base tensors* (nothing writes to them in place; a
full copy would double the memory):

- the training tree, into which peft injects the LoRA layers (a plain teacher-forced
  forward with autograd: the fused decoder is inference-only);
- the inference tree, a plain transformers model whose adapted projections hold merged
  weights ``W + B A * scale`` (new tensors). The engine runs it with the fused decoder, at the
  speed of an untrained model; after an optimizer step the merged weights are recomputed and
  its fused decoder is rebuilt.

The same adapter serves the ``llama`` component (a task loss) and the listener features
(``spacy-llama.TransformerModel.v1`` with ``freeze = false``: the listeners' gradients).
Its shim steps the LoRA weights with thinc's optimizer and, inside a thinc model, serialises
as the adapter's two files (safetensors weights + their config), never the base weights.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
import torch
from thinc.api import PyTorchShim

from ..errors import Errors, TrainingError

# the attribute that caches a model's fused decoders: the copies must not share them
from ..generation.decoder import _SHARED_ATTR, drop_fused_decoders
from ..models.base import LoadedModel, has_local_weights
from ..models.fingerprint import base_identity
from ..models.qlinear import QUANTIZED, Int4Linear, Int8Linear, LowRankAdded
from ..tasks.base import Task
from .settings import LoRASettings

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
ADAPTER = "default"  # peft's adapter name


def own_tree(module: Any) -> Any:
    """A new module tree over the same (frozen) tensors: new Module and Parameter objects,
    so flags, replaced submodules and re-pointed ``.data`` stay in this tree. The fused
    decoders cached on ``module`` are not copied (each tree fuses its own)."""
    memo: Dict[int, Any] = {
        id(p): torch.nn.Parameter(p.data, requires_grad=False) for p in module.parameters()
    }
    memo.update({id(b): b for b in module.buffers()})
    shared = vars(module).get(_SHARED_ATTR)
    if shared is not None:
        memo[id(shared)] = {}
    return copy.deepcopy(module, memo)


class AdapterShim(PyTorchShim):
    """thinc's PyTorchShim over the adapter's training tree: ``finish_update`` steps the
    parameters with gradients (only the LoRA weights have any) and marks the merged weights
    stale; ``to_bytes``/``from_bytes`` are the adapter's files, not the tree's state_dict."""

    def __init__(self, adapter: Adapter, device: Any) -> None:
        super().__init__(adapter.peft, device=device)
        self.adapter = adapter

    def finish_update(self, optimizer: Any) -> None:
        super().finish_update(optimizer)
        self.adapter.stale = True

    def to_bytes(self) -> bytes:
        return self.adapter.to_bytes()

    def from_bytes(self, bytes_data: bytes) -> AdapterShim:
        self.adapter.from_bytes(bytes_data)
        return self


class Adapter:
    def __init__(self, base: LoadedModel, settings: LoRASettings, *, name: str) -> None:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import Linear as LoraLinear

        self.name = name
        self.settings = settings
        self.base_fingerprint = base.fingerprint
        self.base_source = base.source
        self._base = base  # its weights and tokenizer are the base's identity
        self._base_identity: Optional[str] = None
        infer = own_tree(base.model)
        train = own_tree(base.model)
        cfg = train.config
        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft scales by alpha / r
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            layers_to_transform=settings.layer_ids(name, cfg.num_hidden_layers),
            bias="none",
        )
        _check_targets(name, train, settings, base.source)
        # QLoRA: LoRA layers over the frozen int4/int8 projections of a quantized base
        # (peft's own lora.Linear; the base layer is called, never merged into)
        config._register_custom_module({Int4Linear: LoraLinear, Int8Linear: LoraLinear})
        self.peft = get_peft_model(train, config)
        self.peft.eval()
        self.infer = infer
        # The engine's model: the merged inference tree; its fingerprint covers the adapter.
        self.model = dataclasses.replace(base, model=infer, _fingerprint=None)
        self.shim = AdapterShim(self, device=base.device)
        self.stale = True  # merged weights and digest not yet computed

    def trainable(self) -> List[torch.nn.Parameter]:
        return [p for p in self.peft.parameters() if p.requires_grad]

    def swap_in(self, params: Dict[Any, Any]) -> Optional[Dict[str, torch.Tensor]]:
        """Put the optimizer's values for this adapter's weights (thinc keys them
        ``(shim.id, parameter name)``, e.g. Adam's ``averages``) in place; return the current
        values to restore, or None when ``params`` holds none of them. thinc's own
        ``PyTorchShim.use_params`` looks for string keys the optimizer never writes, so it
        would silently keep the current weights."""
        mine = {
            name: p for name, p in self.peft.named_parameters() if (self.shim.id, name) in params
        }
        if not mine:
            return None
        backup = {name: p.data for name, p in mine.items()}
        for name, p in mine.items():
            value = torch.as_tensor(params[(self.shim.id, name)], device=p.device)
            p.data = value.to(p.dtype).reshape(p.shape).clone()
        self.stale = True
        return backup

    def restore(self, backup: Dict[str, torch.Tensor]) -> None:
        for name, p in self.peft.named_parameters():
            if name in backup:
                p.data = backup[name]
        self.stale = True

    def state(self) -> Dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.peft).items()}

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(self.settings.as_dict(), sort_keys=True).encode())
        for key, tensor in sorted(self.state().items()):
            h.update(key.encode())
            h.update(tensor.float().cpu().numpy().tobytes())
        return h.hexdigest()

    def refresh(self) -> bool:
        """Merge the current adapter weights into the inference tree, drop its fused
        decoder and renew the fingerprint. Returns whether anything was stale."""
        if not self.stale:
            return False
        from peft.tuners.lora import LoraLayer

        with torch.no_grad():
            for path, module in self.peft.get_base_model().named_modules():
                if not isinstance(module, LoraLayer) or ADAPTER not in module.lora_A:
                    continue
                layer: Any = module  # a peft lora.Linear
                base = layer.get_base_layer()
                if not isinstance(base, torch.nn.Linear):  # quantized: added, not merged
                    self.infer.set_submodule(path, _low_rank_added(self.infer, path, layer))
                    continue
                weight = base.weight
                delta = layer.get_delta_weight(ADAPTER).to(weight.dtype)
                target: Any = self.infer.get_submodule(path)
                target.weight = torch.nn.Parameter(weight.detach() + delta, requires_grad=False)
        drop_fused_decoders(self.infer)
        self.model.set_adapter_digest(self.digest())
        self.stale = False
        return True

    @property
    def base_identity(self) -> str:
        """The base model as weights and tokenizer (:func:`.fingerprint.base_identity`),
        whatever file format it was read from; computed once, when first needed."""
        if self._base_identity is None:
            self._base_identity = base_identity(self._base.model, self._base.tokenizer)
        return self._base_identity

    # -- saving: the adapter weights and settings only, never base weights ---------------
    def files(self) -> Dict[str, bytes]:
        """The adapter as its two files: safetensors weights and their config (JSON)."""
        from safetensors.torch import save

        cfg: Any = self.peft.get_base_model().config
        meta = {
            **self.settings.as_dict(),
            "base_fingerprint": self.base_fingerprint,
            "base_source": self.base_source,
            "base_identity": self.base_identity,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
        }
        return {
            WEIGHTS_FILE: save({k: v.cpu() for k, v in self.state().items()}),
            CONFIG_FILE: json.dumps(meta, indent=2).encode("utf8"),
        }

    def load_files(self, files: Dict[str, bytes], where: str) -> None:
        """Put saved adapter weights on this adapter's base (``where`` names them in
        messages); the base they were trained on must be this one."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load

        if WEIGHTS_FILE not in files:
            raise TrainingError(Errors.E510.format(path=where, name=self.name))
        meta = self._read_meta(files, where)
        self._check_base(where, meta)
        try:
            saved = load(files[WEIGHTS_FILE])
        except Exception as e:  # safetensors' own error names no file
            error = f"{type(e).__name__}: {e}"
            raise TrainingError(
                Errors.E604.format(file=WEIGHTS_FILE, path=where, error=error)
            ) from None
        weights = self._checked(saved, where)
        set_peft_model_state_dict(
            self.peft, {k: v.to(self.model.device) for k, v in weights.items()}
        )
        self.stale = True

    def _read_meta(self, files: Dict[str, bytes], where: str) -> Dict[str, Any]:
        if CONFIG_FILE not in files:
            return {}
        try:
            meta = json.loads(files[CONFIG_FILE].decode("utf8"))
        except ValueError as e:  # invalid JSON or UTF-8
            raise TrainingError(
                Errors.E604.format(file=CONFIG_FILE, path=where, error=f"{type(e).__name__}: {e}")
            ) from None
        if not isinstance(meta, dict):
            error = f"a JSON {type(meta).__name__}, not an object"
            raise TrainingError(Errors.E604.format(file=CONFIG_FILE, path=where, error=error))
        return meta

    def _checked(self, saved: Dict[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
        """Saved weights that are exactly this adapter's: every expected tensor, nothing
        else, the right shapes, floating point, finite. peft's loader would ignore unknown
        keys and keep missing ones at their untrained values, silently."""
        want = self.state()
        missing = sorted(set(want) - set(saved))
        unexpected = sorted(set(saved) - set(want))
        if missing or unexpected:
            problem = []
            if missing:
                problem.append(f"{len(missing)} of {len(want)} tensors missing ({_few(missing)})")
            if unexpected:
                problem.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
            raise TrainingError(
                Errors.E605.format(
                    file=WEIGHTS_FILE, path=where, name=self.name, problem="; ".join(problem)
                )
            )
        out = {}
        for key, tensor in sorted(saved.items()):
            expected = want[key]
            if tensor.shape != expected.shape or not tensor.is_floating_point():
                raise TrainingError(
                    Errors.E606.format(
                        file=WEIGHTS_FILE,
                        path=where,
                        key=key,
                        name=self.name,
                        got=f"shape {tuple(tensor.shape)} ({tensor.dtype})",
                        want=f"shape {tuple(expected.shape)} (floating point)",
                    )
                )
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise TrainingError(
                    Errors.E607.format(file=WEIGHTS_FILE, path=where, key=key, count=bad)
                )
            out[key] = tensor.to(expected.dtype)
        return out

    def to_disk(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for file_name, data in self.files().items():
            (path / file_name).write_bytes(data)

    def from_disk(self, path: Path) -> None:
        names = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if (path / n).exists()]
        files = {n: (path / n).read_bytes() for n in names}
        self.load_files(files, str(path))

    def to_bytes(self) -> bytes:
        return srsly.msgpack_dumps(self.files())  # type: ignore[no-any-return]

    def from_bytes(self, data: bytes) -> None:
        self.load_files(srsly.msgpack_loads(data), f"the saved model of {self.name!r}")

    def _check_base(self, where: str, meta: Dict[str, Any]) -> None:
        cfg: Any = self.peft.get_base_model().config
        now = {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers}
        saved = {k: meta.get(k) for k in now}
        same_shape = saved == now
        same_files = meta.get("base_fingerprint") == self.base_fingerprint
        # The same weights and tokenizer read from another format (a GGUF file and
        # `convert`'s folder of it) are the same base: compared only when the files differ.
        same_base = same_files or (
            bool(meta.get("base_identity")) and meta.get("base_identity") == self.base_identity
        )
        if not same_shape or not same_base:
            raise TrainingError(
                Errors.E509.format(
                    path=where,
                    saved=f"{meta.get('base_source')} (fingerprint "
                    f"{str(meta.get('base_fingerprint'))[:12]}, {saved})",
                    current=f"{self.base_source} (fingerprint {self.base_fingerprint[:12]}, {now})",
                )
            )


def _low_rank_added(infer: Any, path: str, layer: Any) -> LowRankAdded:
    """The inference tree's module at ``path``: its quantized projection plus the current
    LoRA weights of ``layer`` (copies: the optimizer keeps stepping the originals)."""
    current = infer.get_submodule(path)
    base = current.base if isinstance(current, LowRankAdded) else current
    return LowRankAdded(
        base,
        layer.lora_A[ADAPTER].weight.detach().clone(),
        layer.lora_B[ADAPTER].weight.detach().clone(),
        layer.scaling[ADAPTER],
    )
def _few(keys: List[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _check_targets(name: str, module: Any, settings: LoRASettings, source: str) -> None:
    """Fail with the model's projection names rather than peft's ValueError."""
    kinds = (torch.nn.Linear, *QUANTIZED)
    linears = [path for path, m in module.named_modules() if isinstance(m, kinds)]
    leaves = {path.rsplit(".", 1)[-1] for path in linears}
    missing = sorted(set(settings.target_modules) - leaves)
    if missing:
        raise TrainingError(
            Errors.E504.format(name=name, targets=missing, source=source, known=sorted(leaves))
        )


def check_adapter_model(name: str, model: Any, quantize: Optional[str]) -> None:
    """An adapter needs local weights with gradients: no server, no int8."""
    if not has_local_weights(model):
        raise TrainingError(Errors.E501.format(name=name, source=getattr(model, "source", model)))
    if quantize is not None:
        raise TrainingError(Errors.E502.format(name=name, quantize=quantize))


def build_adapter(
    name: str, model: Any, task: Task, settings: LoRASettings, quantize: Optional[str]
) -> Adapter:
    """The component's adapter, after the checks that make a bad block a build-time error
    (a task that no row of the capability table trains: E503, E962)."""
    from .capabilities import training_for

    training_for(task, name)
    return new_adapter(name, model, settings, quantize)


def new_adapter(
    name: str, model: Any, settings: LoRASettings, quantize: Optional[str] = None
) -> Adapter:
    """An adapter on ``model`` for any trainer (a task loss, or listener features), after
    the checks on the model and the settings; its merged weights are ready."""
    check_adapter_model(name, model, quantize)
    settings.check(name)
    adapter = Adapter(model, settings, name=name)
    adapter.refresh()
    return adapter
