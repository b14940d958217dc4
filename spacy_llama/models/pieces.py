"""The bytes each piece (token) of a LLaMA tokenizer stands for, read from the pieces
themselves, never from the fast tokenizer's offsets (Llama 3's are zero-width or shifted).

Byte-level BPE (Llama 3, GPT-2, SmolLM2): each character of a piece is one byte through the
byte-to-unicode table. SentencePiece (Llama 1/2): "▁" is a space and ``<0xNN>`` a
byte-fallback byte; other pieces are their UTF-8 text. The grammar engine builds its
vocabulary from these bytes (generation/grammar.py) and the listener features align spaCy
tokens with them (features/alignment.py): one reading for both.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Dict, List, Sequence

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> Dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def is_byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer's decoder is byte-level BPE, read from the fast tokenizer's own
    definition (slow tokenizers are SentencePiece here)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder")
    return '"ByteLevel"' in json.dumps(decoder)


class PieceReader:
    """The bytes each piece id stands for, for one tokenizer (special pieces: none)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.byte_level = is_byte_level(tokenizer)
        self.special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)

    def piece_bytes(self, ids: Sequence[int]) -> List[bytes]:
        strings = self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
        return [
            b"" if int(i) in self.special_ids else self.bytes_of(str(s))
            for i, s in zip(ids, strings)
        ]

    def bytes_of(self, piece: str) -> bytes:
        """The bytes of one (non-special) piece string."""
        if self.byte_level:
            table = _byte_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        fallback = _BYTE_PIECE.match(piece)
        if fallback is not None:
            return bytes([int(fallback.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf8")
