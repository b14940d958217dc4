"""Write a tiny GGUF file from a tiny Hugging Face LLaMA folder (tests/tiny.py), the way
llama.cpp's convert_hf_to_gguf.py does: ``llama.*`` metadata, GGUF tensor names, q/k permuted
to llama.cpp's rotary layout (transformers' GGUF loader permutes them back), and the
byte-level BPE tokenizer as ``tokenizer.ggml.model = "gpt2"`` tokens/types/merges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

# transformers name (inside model.layers.N.) -> GGUF name (inside blk.N.)
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOKEN_NORMAL, _TOKEN_CONTROL = 1, 3


def llama_cpp_permute(w: Any, n_head: int, n_head_kv: int) -> Any:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF half-rotation -> interleaved pairs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def make_tiny_gguf(path: Path, hf_folder: Path) -> Path:
    """Write ``path`` (F32 GGUF) holding the weights and tokenizer of ``hf_folder``."""
    import gguf

    config = json.loads((Path(hf_folder) / "config.json").read_text(encoding="utf8"))
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_model_metadata(writer, config)
    _add_tokenizer(writer, Path(hf_folder))
    for name, array in _gguf_tensors(Path(hf_folder), config).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_model_metadata(writer: Any, config: Dict[str, Any]) -> None:
    import gguf

    heads = config["num_attention_heads"]
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_tokenizer(writer: Any, hf_folder: Path) -> None:
    spec = json.loads((hf_folder / "tokenizer.json").read_text(encoding="utf8"))
    vocab: Dict[str, int] = dict(spec["model"]["vocab"])
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "ids must be dense"
    special = {a["content"] for a in spec.get("added_tokens", []) if a.get("special")}
    merges: List[str] = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([_TOKEN_CONTROL if t in special else _TOKEN_NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_unk_token_id(vocab["<unk>"])
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)


def _gguf_tensors(hf_folder: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    from safetensors.numpy import load_file

    state = load_file(str(hf_folder / "model.safetensors"))
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    out: Dict[str, Any] = {
        "token_embd.weight": state["model.embed_tokens.weight"],
        "output_norm.weight": state["model.norm.weight"],
        "output.weight": state["lm_head.weight"],
    }
    for i in range(config["num_hidden_layers"]):
        for hf_name, gguf_name in _LAYER_NAMES.items():
            w = state[f"model.layers.{i}.{hf_name}"]
            if gguf_name == "attn_q.weight":
                w = llama_cpp_permute(w, heads, heads)
            elif gguf_name == "attn_k.weight":
                w = llama_cpp_permute(w, heads, kv_heads)
            out[f"blk.{i}.{gguf_name}"] = w.astype("float32").copy()
    return out
