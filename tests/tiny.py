"""Builders for tiny random LLaMA models, written the way real checkpoints are, so the
tests exercise the real loading code. Used by conftest fixtures and by subprocess tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

CORPUS = [
    "Apple is looking at buying a U.K. startup for $1 billion.",
    "Autonomous cars shift insurance liability toward manufacturers.",
    "San Francisco considers banning sidewalk delivery robots.",
    "London is a big city in the United Kingdom.",
    "The quick brown fox jumps over the lazy dog.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "Summarize the text in one short sentence. Named entities: Text: answer",
] * 4

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def make_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer with LLaMA's conventions: BOS 1 added, EOS 2, no pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    params: Dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        initializer_range=0.2,  # peaky logits: greedy choices are far from ties
    )
    params.update(overrides)
    return LlamaConfig(**params)


def make_tiny_hf(folder: Path, *, seed: int = 0, config: Optional[Dict[str, Any]] = None) -> Path:
    """Write a tiny random LlamaForCausalLM + tokenizer as a Hugging Face folder."""
    import torch
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), **(config or {})))
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder
