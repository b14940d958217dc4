"""``spacy-llama.TransformerModel.v1``/``.v2``: a LLaMA's hidden states as spacy-transformers
features (v2 adds ``normalize``: every layer through the model's final norm).

The model of spacy-transformers' own ``transformer`` factory: it returns the factory's
``FullTransformerBatch`` (spans, pieces, one right-padded grid of hidden states, the
token-to-piece alignment), so the stock ``spacy-transformers.TransformerListener.v1`` feeds
them to tagger, parser, ner, textcat or spancat unchanged. The weights come from any
``@llama_models`` block (the same cached load as the ``llama`` component: one copy).

Frozen (``freeze = true``): the hidden states are computed under ``torch.inference_mode``
and backprop returns nothing into the LLaMA; only the scalar mix (``layer = "mix"``) learns.
Trainable (``freeze = false`` with an ``adapter`` block, ``spacy-llama.LoRA.v1``): the
adapter of training/adapters.py (the one the ``llama`` component trains) builds its own
module trees over the shared frozen base tensors; in training the forward runs through its
LoRA tree with autograd and the listeners' gradients reach the LoRA weights, which thinc's
``finish_update`` steps through the adapter's shim; predictions run the merged tree with no
graph. The base weights are never written, so a ``llama`` component on the same cached
model keeps seeing them unchanged (one copy in memory).

Serialised, the model is its few mix parameters plus, when trained, the adapter's
safetensors weights and config (the shim's bytes): no base weights, and ``spacy.load``
rebuilds the model from the config's model block and puts the adapter back on it.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy
import torch
from spacy.tokens import Doc, Span
from spacy.util import registry
from spacy_transformers.align import get_token_positions
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from thinc.api import Model
from thinc.types import Ragged
from transformers.modeling_outputs import BaseModelOutput

from ..errors import Errors, FeatureError
from ..generation.rows import pad_right
from ..models.base import LanguageModel, LoadedModel, has_local_weights
from ..models.pieces import PieceReader
from ..training.settings import LoRASettings  # registers spacy-llama.LoRA.v1
from .alignment import align_span
from .batching import StatesBackprop, grid_width, hidden_states, trainable_hidden_states
from .cache import FeatureCache
from .layers import mix_layer_grads, scalar_mix

if TYPE_CHECKING:  # pragma: no cover
    from ..training.adapters import Adapter

# The adapter's name in its messages: its block is [components.transformer.model.adapter].
ADAPTER_NAME = "transformer.model"

SpanGetter = Callable[[List[Doc]], List[List[Span]]]
Layer = Union[int, str]


class LlamaFeatures(Model):
    """The thinc model; the LoadedModel is a plain attribute (never serialised). With an
    adapter, ``llama`` is the adapter's merged copy (its fingerprint covers the adapter
    weights) and the adapter's shim is the model's only shim."""

    def __init__(
        self, llama: LoadedModel, get_spans: SpanGetter, layer: Layer, batch_tokens: int,
        adapter: Optional[Adapter] = None, normalize: bool = False,
    ) -> None:  # fmt: skip
        n_states = int(llama.model.config.num_hidden_layers) + 1
        params: Dict[str, Any] = {}
        if layer == "mix":
            params = {
                "mix_weights": numpy.zeros((n_states,), "f"),
                "mix_gamma": numpy.ones((1,), "f"),
            }
        super().__init__(
            "spacy-llama.transformer",
            forward,
            init=lambda model, X=None, Y=None: model,
            dims={"nO": int(llama.model.config.hidden_size)},
            params=params,
            shims=[] if adapter is None else [adapter.shim],
            attrs={
                "get_spans": get_spans,
                "layer": layer,
                "batch_tokens": batch_tokens,
                "normalize": normalize,
            },
        )
        self.adapter = adapter
        self.llama = llama if adapter is None else adapter.model
        self.reader = PieceReader(llama.tokenizer)
        self.feature_cache = FeatureCache()  # frozen: each span's states computed once

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the weights the features come from: the base model's, and
        with an adapter also its current weights (as the ``llama`` component's)."""
        if self.adapter is not None:
            self.adapter.refresh()
        return self.llama.fingerprint


@registry.architectures("spacy-llama.TransformerModel.v1")
def llama_transformer_v1(
    model: LanguageModel,
    get_spans: SpanGetter,
    layer: Layer = -1,
    freeze: bool = True,
    batch_tokens: int = 4096,
    adapter: Optional[LoRASettings] = None,
) -> Model[List[Doc], FullTransformerBatch]:
    """Hidden states of ``model`` (any @llama_models block with local weights) at ``layer``
    (0 = the embeddings, -1 = the last layer, "mix" = a learned mix of all), one row per
    span of ``get_spans`` (e.g. spacy-transformers.strided_spans.v1). ``freeze = false``
    trains the LoRA ``adapter`` (spacy-llama.LoRA.v1) from the listeners' gradients."""
    if not has_local_weights(model):
        raise FeatureError(Errors.E550.format(source=model.source))
    if not freeze and adapter is None:
        raise FeatureError(Errors.E555)
    if freeze and adapter is not None:
        raise FeatureError(Errors.E557)
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise FeatureError(Errors.E556.format(value=batch_tokens))
    checked = check_layer(layer, model)
    lora = None
    if adapter is not None:
        from ..training.adapters import new_adapter

        lora = new_adapter(ADAPTER_NAME, model, adapter)
    return LlamaFeatures(model, get_spans, checked, batch_tokens, lora)


@registry.architectures("spacy-llama.TransformerModel.v2")
def llama_transformer_v2(
    model: LanguageModel,
    get_spans: SpanGetter,
    layer: Layer = -1,
    freeze: bool = True,
    batch_tokens: int = 4096,
    adapter: Optional[LoRASettings] = None,
    normalize: bool = True,
) -> Model[List[Doc], FullTransformerBatch]:
    """TransformerModel.v1 plus ``normalize``: every hidden layer through the model's own
    final norm (the last layer already is, so at layer -1 the states are v1's), so middle
    layers and a mix of layers reach the listeners on the last layer's scale
    (batching.final_normed says why; benchmarks/LAYERS.md measures both)."""
    if not isinstance(normalize, bool):
        raise FeatureError(Errors.E766.format(value=normalize))
    built = llama_transformer_v1(model, get_spans, layer, freeze, batch_tokens, adapter)
    if normalize and not hasattr(built.llama.model.base_model, "norm"):
        raise FeatureError(Errors.E767.format(source=model.source))
    built.attrs["normalize"] = normalize
    return built


def check_layer(layer: Any, model: LoadedModel) -> Layer:
    """``layer`` as a hidden-state index in range, or "mix"."""
    count = int(model.model.config.num_hidden_layers) + 1
    if layer == "mix":
        return "mix"
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise FeatureError(
            Errors.E551.format(value=layer, source=model.source, count=count, last=count - 1)
        )
    return layer


def getter_name(get_spans: Any) -> str:
    """The span getter as a user reads it in a message: its function and settings."""
    if isinstance(get_spans, partial):
        args = ", ".join(f"{k}={v!r}" for k, v in get_spans.keywords.items())
        return f"{getattr(get_spans.func, '__name__', get_spans.func)}({args})"
    return str(getattr(get_spans, "__name__", get_spans))


def check_coverage(docs: Sequence[Doc], nested: Sequence[Sequence[Span]], getter: str) -> None:
    """Every token that is not whitespace is in some span (else it would get no features)."""
    for doc, spans in zip(docs, nested):
        covered = numpy.zeros((len(doc),), dtype=bool)
        for span in spans:
            covered[span.start : span.end] = True
        missing = [t for t in doc if not covered[t.i] and not t.is_space]
        if missing:
            raise FeatureError(
                Errors.E553.format(
                    doc=doc.text[:60], getter=getter, count=len(missing),
                    token=missing[0].text, i=missing[0].i,
                )
            )  # fmt: skip


def encode_spans(model: LlamaFeatures, flat: Sequence[Span]) -> List[List[int]]:
    """Piece ids of each span (with the tokenizer's special pieces, e.g. BOS); a span longer
    than the context raises, naming the doc and the span getter."""
    llama = model.llama
    texts = [span.text for span in flat]
    # a document's text is text: a control string in it stays ordinary pieces
    encoded = (
        llama.tokenizer(texts, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        if texts
        else []
    )
    rows = [list(ids) for ids in encoded]
    for span, row in zip(flat, rows):
        if len(row) > llama.context_length:
            window = max(1, int(len(span) * llama.context_length / len(row) * 0.9))
            raise FeatureError(
                Errors.E552.format(
                    doc=span.doc.text[:60], tokens=len(span.doc), start=span.start, end=span.end,
                    pieces=len(row), context=llama.context_length, window=window,
                    getter=getter_name(model.attrs["get_spans"]),
                )
            )  # fmt: skip
    return rows


def build_alignment(
    model: LlamaFeatures, flat: Sequence[Span], rows: Sequence[Sequence[int]], width: int
) -> Ragged:
    """For each token of the docs (spacy-transformers' order), its pieces' indices in the
    flattened (spans x width) grid; a token in overlapping windows gets the pieces of all."""
    positions = get_token_positions(list(flat))
    aligned: List[set] = [set() for _ in range(len(positions))]
    for s, (span, row) in enumerate(zip(flat, rows)):
        for token, pieces in zip(span, align_span(span, row, model.reader, model.llama.source)):
            aligned[positions[token]].update(s * width + j for j in pieces)
    lengths = [len(a) for a in aligned]
    data = [j for a in aligned for j in sorted(a)]
    data_arr: Any = numpy.array(data, dtype="i")
    counts: Any = numpy.array(lengths, dtype="i")
    return Ragged(data_arr, counts)


def wordpiece_batch(model: LlamaFeatures, rows: Sequence[Sequence[int]]) -> WordpieceBatch:
    padded, attended = pad_right(rows, model.llama.pad_token_id, width=grid_width(rows))
    ids: Any = padded.numpy().astype("i")
    mask: Any = attended.numpy().astype("f")
    strings = [list(model.llama.tokenizer.convert_ids_to_tokens(list(r))) for r in rows]
    return WordpieceBatch(strings, ids, mask, [len(r) for r in rows], None)


def compute_states(
    model: LlamaFeatures, rows: Sequence[Sequence[int]], is_train: bool
) -> Tuple[numpy.ndarray, Optional[StatesBackprop]]:
    """The hidden states of ``rows``; with an adapter in training, through its LoRA tree
    with autograd (and a backprop into the LoRA weights), else with no graph (the adapter's
    merged tree, refreshed after an optimizer step)."""
    layer, budget = model.attrs["layer"], model.attrs["batch_tokens"]
    normalize = bool(model.attrs.get("normalize", False))
    pad = model.llama.pad_token_id
    adapter = model.adapter
    if adapter is not None and is_train:
        peft = adapter.peft
        peft.train()  # LoRA dropout
        try:
            return trainable_hidden_states(
                peft.get_base_model().base_model, rows, pad, layer, budget, normalize
            )
        finally:
            peft.eval()
    if adapter is not None:
        adapter.refresh()
        base = model.llama.model.base_model
        return hidden_states(base, rows, pad, layer, budget, normalize), None
    base = model.llama.model.base_model
    states = model.feature_cache.states(
        # normalised states are other states of the same weights: another key
        model.llama.fingerprint + (":normalized" if normalize else ""),
        layer,
        rows,
        lambda todo: hidden_states(base, todo, pad, layer, budget, normalize),
    )
    return states, None


def forward(
    model: LlamaFeatures, docs: List[Doc], is_train: bool
) -> Tuple[FullTransformerBatch, Callable[[FullTransformerBatch], List[Doc]]]:
    get_spans = model.attrs["get_spans"]
    nested = get_spans(docs)
    check_coverage(docs, nested, getter_name(get_spans))
    flat = [span for spans in nested for span in spans]
    rows = encode_spans(model, flat)
    align = build_alignment(model, flat, rows, grid_width(rows))
    states, bp_states = compute_states(model, rows, is_train)
    bp_mix = None
    if model.attrs["layer"] == "mix":
        weights = cast(Any, model.get_param("mix_weights")).copy()
        gamma = cast(Any, model.get_param("mix_gamma")).copy()
        layers_bp = bp_states
        bp_states = None if layers_bp is None else (
            lambda d: layers_bp(mix_layer_grads(weights, gamma, d))
        )  # fmt: skip
        states, bp_mix = scalar_mix(states, weights, gamma)
    output = FullTransformerBatch(
        spans=nested,
        wordpieces=wordpiece_batch(model, rows),
        model_output=BaseModelOutput(last_hidden_state=cast(Any, torch.from_numpy(states))),
        align=align,
    )

    def backprop(d_output: FullTransformerBatch) -> List[Doc]:
        """The mix (if any) gets its gradient; with a training adapter, so do its LoRA
        weights (frozen: nothing flows into the LLaMA)."""
        if not len(d_output.model_output):
            return docs
        d_states = next(iter(d_output.model_output.values()))
        d_np = numpy.asarray(d_states.detach().cpu().numpy(), dtype="f")
        if bp_mix is not None:
            d_w, d_gamma = bp_mix(d_np)
            model.inc_grad("mix_weights", cast(Any, d_w))
            model.inc_grad("mix_gamma", cast(Any, d_gamma))
        if bp_states is not None:
            bp_states(d_np)
        return docs

    return output, backprop
