"""Builders of tiny Meta-layout checkpoints (``consolidated.NN.pth`` + params.json +
tokenizer.model) from tiny random transformers LLaMA models, by the inverse of the mapping
the loader applies: un-permute q/k, split into model-parallel shards as Meta's fairscale
layers do. Each builder also writes the same weights as a Hugging Face folder, so tests can
compare the loaders. Deliberately independent of spacy_llama's own code."""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .tiny import CORPUS

# Meta's Llama 3 pre-tokenizer regex (llama3/tokenizer.py).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
STYLES = ("llama1", "llama2", "codellama", "llama3", "llama31")


# -- tokenizers ------------------------------------------------------------------------------


def train_sentencepiece(path: Path, *, vocab_size: int = 384) -> Path:
    """A Llama-2-like sentencepiece BPE model (unk 0, bos 1, eos 2, byte fallback)."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",  # Llama's settings
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(buf.getvalue())
    return path


def train_tiktoken_ranks(*, n_merges: int = 64) -> Dict[bytes, int]:
    """Byte-level BPE ranks as tiktoken stores them: the 256 bytes, then learned merges."""
    import regex

    ranks = {bytes([i]): i for i in range(256)}
    words = [
        [bytes([b]) for b in w.encode()] for t in CORPUS for w in regex.findall(LLAMA3_PATTERN, t)
    ]
    for _ in range(n_merges):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        (a, b), _count = counts.most_common(1)[0]
        ranks[a + b] = len(ranks)
        words = [_merge_pair(w, a, b) for w in words]
    return ranks


def _merge_pair(word: List[bytes], a: bytes, b: bytes) -> List[bytes]:
    out: List[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def write_tiktoken_file(path: Path, ranks: Dict[bytes, int]) -> Path:
    lines = [
        f"{base64.b64encode(t).decode()} {r}" for t, r in sorted(ranks.items(), key=lambda x: x[1])
    ]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def llama3_specials() -> List[str]:
    """Meta-Llama-3's tokenizer.py special tokens (256 in all, ids after the base ranks)."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|reserved_special_token_2|>",
        "<|reserved_special_token_3|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_4|>",
        "<|eot_id|>",
    ]
    return named + [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]


def tiktoken_encoding(path: Path) -> Any:
    """The reference: tiktoken's own Encoding for a rank file, with Meta's specials."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path))
    specials = {s: len(ranks) + i for i, s in enumerate(llama3_specials())}
    return tiktoken.Encoding(
        name="tiny-llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def hf_tokenizer(kind: str, tokenizer_model: Path) -> Any:
    """The HF folder's tokenizer. tiktoken: built with transformers' own converter.
    sentencepiece: transformers' converter needs protobuf (not installed), so we save the
    loader's tokenizer; its ids are checked against sentencepiece itself in test_meta.py."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if kind == "sentencepiece":
        from spacy_llama.models.tokenizers import sentencepiece_tokenizer

        return sentencepiece_tokenizer(tokenizer_model)[0]
    specials = llama3_specials()
    tok = TikTokenConverter(
        vocab_file=str(tokenizer_model), pattern=LLAMA3_PATTERN, additional_special_tokens=specials
    ).converted()
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|end_of_text|>")


# -- params and weights ----------------------------------------------------------------------


def ffn_dim(dim: int, multiple_of: int, multiplier: Optional[float]) -> int:
    hidden = int(2 * 4 * dim / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


def meta_params(style: str, *, n_kv_heads: Optional[int], vocab_size: int) -> Dict[str, Any]:
    """params.json as each release writes it (tiny sizes)."""
    params: Dict[str, Any] = {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_layers": 2}
    if style == "llama1":
        params.update(norm_eps=1e-6, vocab_size=-1)
    elif style == "llama2":
        params.update(norm_eps=1e-5, vocab_size=-1)
    elif style == "codellama":
        params.update(norm_eps=1e-5, vocab_size=vocab_size, rope_theta=1000000.0)
    else:
        params.update(
            norm_eps=1e-5, vocab_size=vocab_size, rope_theta=500000.0, ffn_dim_multiplier=1.3
        )
        if style == "llama31":
            params["use_scaled_rope"] = True
    if n_kv_heads is not None:
        params["n_kv_heads"] = n_kv_heads
        params.setdefault("ffn_dim_multiplier", 1.3)  # as Llama 2 70B does
    params["some_future_key"] = "ignored"
    return params


def hf_config(params: Dict[str, Any], vocab_size: int) -> Any:
    from transformers import LlamaConfig

    rope_scaling = None
    if params.get("use_scaled_rope"):
        rope_scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=params["dim"],
        intermediate_size=ffn_dim(
            params["dim"], params["multiple_of"], params.get("ffn_dim_multiplier")
        ),
        num_hidden_layers=params["n_layers"],
        num_attention_heads=params["n_heads"],
        num_key_value_heads=params.get("n_kv_heads", params["n_heads"]),
        max_position_embeddings=131072 if rope_scaling else 4096,
        rms_norm_eps=params["norm_eps"],
        rope_theta=params.get("rope_theta", 10000.0),
        rope_scaling=rope_scaling,
        tie_word_embeddings=False,
        initializer_range=0.2,  # peaky logits: greedy choices are far from ties
    )


def unpermute(w: Any, n_heads: int) -> Any:
    """transformers' half-rotation layout -> Meta's interleaved pairs."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _split(w: Any, dim: int, mp: int) -> List[Any]:
    return [c.clone() for c in w.chunk(mp, dim=dim)]  # clone: each shard owns its storage


def _split_kv(w: Any, mp: int, n_kv: int) -> List[Any]:
    """Meta's split; with more shards than kv heads each head is replicated over shards."""
    if mp <= n_kv:
        return _split(w, 0, mp)
    heads = w.chunk(n_kv, dim=0)
    return [heads[s * n_kv // mp].clone() for s in range(mp)]


def to_meta_shards(
    state: Dict[str, Any], params: Dict[str, Any], *, mp: int, llama3: bool
) -> List[Dict[str, Any]]:
    """A transformers state dict -> ``mp`` Meta model-parallel shard state dicts."""
    import torch

    n_heads = params["n_heads"]
    n_kv = params.get("n_kv_heads", n_heads)
    shards: List[Dict[str, Any]] = [{} for _ in range(mp)]

    def put(key: str, parts: List[Any]) -> None:
        for shard, part in zip(shards, parts):
            shard[key] = part

    put("tok_embeddings.weight", _split(state["model.embed_tokens.weight"], 0 if llama3 else 1, mp))
    put("norm.weight", [state["model.norm.weight"].clone() for _ in range(mp)])
    put("output.weight", _split(state["lm_head.weight"], 0, mp))
    if not llama3:  # Llama 1/2 shards carry the rotary table too; loaders ignore it
        head_dim = params["dim"] // n_heads
        put("rope.freqs", [torch.ones(head_dim // 2) for _ in range(mp)])
    for i in range(params["n_layers"]):
        p, m = f"model.layers.{i}.", f"layers.{i}."
        put(
            m + "attention.wq.weight",
            _split(unpermute(state[p + "self_attn.q_proj.weight"], n_heads), 0, mp),
        )
        put(
            m + "attention.wk.weight",
            _split_kv(unpermute(state[p + "self_attn.k_proj.weight"], n_kv), mp, n_kv),
        )
        put(m + "attention.wv.weight", _split_kv(state[p + "self_attn.v_proj.weight"], mp, n_kv))
        put(m + "attention.wo.weight", _split(state[p + "self_attn.o_proj.weight"], 1, mp))
        put(m + "feed_forward.w1.weight", _split(state[p + "mlp.gate_proj.weight"], 0, mp))
        put(m + "feed_forward.w2.weight", _split(state[p + "mlp.down_proj.weight"], 1, mp))
        put(m + "feed_forward.w3.weight", _split(state[p + "mlp.up_proj.weight"], 0, mp))
        put(
            m + "attention_norm.weight",
            [state[p + "input_layernorm.weight"].clone() for _ in range(mp)],
        )
        put(
            m + "ffn_norm.weight",
            [state[p + "post_attention_layernorm.weight"].clone() for _ in range(mp)],
        )
    return shards


@dataclass
class TinyMeta:
    folder: Path  # the Meta layout
    hf_folder: Path  # the same weights as a Hugging Face folder
    model: Any  # the original transformers model (fp32, eval)
    tokenizer_kind: str  # "sentencepiece" | "tiktoken"


def write_tokenizer(folder: Path, style: str) -> Tuple[str, int]:
    """Write tokenizer.model; returns its kind and the model's vocabulary size."""
    path = folder / "tokenizer.model"
    if style in ("llama3", "llama31"):
        ranks = train_tiktoken_ranks()
        write_tiktoken_file(path, ranks)
        return "tiktoken", len(ranks) + 256
    train_sentencepiece(path)
    import sentencepiece as spm

    return "sentencepiece", spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


def make_meta_checkpoint(
    folder: Path,
    *,
    style: str = "llama2",
    mp: int = 1,
    n_kv_heads: Optional[int] = None,
    seed: int = 0,
) -> TinyMeta:
    """A tiny random model written as Meta's folder (``mp`` shards) and as an HF folder."""
    import torch
    from transformers import LlamaForCausalLM

    assert style in STYLES, style
    folder = Path(folder)
    meta, hf = folder / "meta", folder / "hf"
    meta.mkdir(parents=True, exist_ok=True)
    kind, vocab = write_tokenizer(meta, style)
    params = meta_params(style, n_kv_heads=n_kv_heads, vocab_size=vocab)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf_config(params, vocab)).eval()
    model.save_pretrained(str(hf), safe_serialization=True)
    hf_tokenizer(kind, meta / "tokenizer.model").save_pretrained(str(hf))
    shards = to_meta_shards(model.state_dict(), params, mp=mp, llama3=kind == "tiktoken")
    for i, shard in enumerate(shards):
        torch.save(shard, meta / f"consolidated.{i:02d}.pth")
    (meta / "params.json").write_text(json.dumps(params), encoding="utf8")
    return TinyMeta(folder=meta, hf_folder=hf, model=model, tokenizer_kind=kind)


def meta_from_hf(hf_folder: Path, dest: Path, *, mp: int = 2) -> Path:
    """The weights of a tests/tiny.py HF folder as a Llama-2-layout Meta folder (no
    tokenizer.model: its byte-level BPE tokenizer is passed as ``tokenizer_path``)."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(hf_folder) / "config.json").read_text(encoding="utf8"))
    dim = config["hidden_size"]
    params = {
        "dim": dim,
        "n_layers": config["num_hidden_layers"],
        "n_heads": config["num_attention_heads"],
        "n_kv_heads": config["num_key_value_heads"],
        "vocab_size": config["vocab_size"],
        "multiple_of": 32,
        "ffn_dim_multiplier": 0.75,  # int(0.75 * int(8 * 64 / 3)) = 127 -> 128
        "norm_eps": config["rms_norm_eps"],
        "rope_theta": config["rope_theta"],
    }
    assert ffn_dim(dim, 32, 0.75) == config["intermediate_size"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = load_file(str(Path(hf_folder) / "model.safetensors"))
    for i, shard in enumerate(to_meta_shards(state, params, mp=mp, llama3=False)):
        torch.save(shard, dest / f"consolidated.{i:02d}.pth")
    (dest / "params.json").write_text(json.dumps(params), encoding="utf8")
    return dest
