"""Tiny tokenizers of the two families the alignment must handle, built in memory:
SentencePiece-like (LLaMA 1/2: "▁" marks a leading space, a dummy prefix, byte fallback
to <0xNN> pieces) and tiktoken-like (Llama 3: byte-level BPE, "Ġ" a leading space)."""

from __future__ import annotations

from typing import Any

SP_PIECES = ["▁Hello", "▁w", "rld", "▁", "!", "▁big", "▁city", "o", "l", "d", "r", "e", "H"]


def sentencepiece_like() -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    vocab = [(p, 0.0) for p in specials + byte_pieces]
    vocab += [(p, -float(len(SP_PIECES) - len(p))) for p in SP_PIECES]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
         decoders.Strip(" ", 1, 0)]
    )  # fmt: skip
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiktoken_like() -> Any:
    """Byte-level BPE with BOS (the tiny test model's tokenizer)."""
    from ..fixtures.tiny import make_tokenizer

    return make_tokenizer()
