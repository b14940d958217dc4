"""spaCy tokens to a LLaMA tokenizer's pieces, through character offsets computed from the
pieces themselves.

The tokenizer's own ``offset_mapping`` cannot be trusted: Llama 3's fast tokenizer returns
zero-width or shifted offsets, and slow SentencePiece tokenizers return none. So each piece
is turned back into the bytes it stands for (``models/pieces.py``), the
bytes are decoded once, and every piece gets the characters its bytes fall in (a multi-byte
character split over pieces belongs to all of them). The decoded text is then mapped onto
the span's text (equal, or with the one leading space SentencePiece adds; otherwise a diff
of the two strings).
"""

from __future__ import annotations

import difflib
from typing import List, Sequence, Tuple

from spacy.tokens import Span

from ..errors import Errors, FeatureError
from ..models.pieces import PieceReader


def piece_char_spans(pieces: Sequence[bytes]) -> Tuple[str, List[Tuple[int, int]]]:
    """The text the pieces decode to, and each piece's [start, end) characters in it."""
    data = b"".join(pieces)
    text = data.decode("utf8", errors="surrogateescape")  # a stray byte: one character
    byte_char: List[int] = []
    for ci, ch in enumerate(text):
        byte_char.extend([ci] * len(ch.encode("utf8", errors="surrogateescape")))
    spans: List[Tuple[int, int]] = []
    pos = 0
    for piece in pieces:
        if piece:
            spans.append((byte_char[pos], byte_char[pos + len(piece) - 1] + 1))
        else:
            spans.append((0, 0))
        pos += len(piece)
    return text, spans


def decoded_to_text(decoded: str, text: str) -> List[List[int]]:
    """For each character of ``decoded``, the characters of ``text`` it stands for."""
    if decoded == text:
        return [[i] for i in range(len(text))]
    if decoded == " " + text:  # SentencePiece's dummy prefix
        return [[]] + [[i] for i in range(len(text))]
    # Otherwise (normalisation, an unknown piece, lost spaces): a diff of the two strings.
    # Equal runs map one to one, a replaced run to the whole run it replaces (a normalised
    # character still gets its pieces), extra decoded characters to nothing.
    out: List[List[int]] = [[] for _ in decoded]
    matcher = difflib.SequenceMatcher(None, decoded, text, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        for i in range(i1, i2):
            if op == "equal":
                out[i] = [j1 + i - i1]
            elif op == "replace":
                out[i] = list(range(j1, j2))
    return out


def align_span(span: Span, ids: Sequence[int], reader: PieceReader, source: str) -> List[List[int]]:
    """For each token of ``span``, the indices of the pieces (of ``ids``) that cover it.
    A token that is not whitespace and gets no piece raises (never zero features)."""
    decoded, spans = piece_char_spans(reader.piece_bytes(ids))
    to_text = decoded_to_text(decoded, span.text)
    char_pieces: List[List[int]] = [[] for _ in range(len(span.text))]
    for j, (start, end) in enumerate(spans):
        for c in range(start, end):
            for t in to_text[c]:
                if not char_pieces[t] or char_pieces[t][-1] != j:
                    char_pieces[t].append(j)
    offset = span.start_char
    out: List[List[int]] = []
    for token in span:
        found = sorted(
            {
                j
                for c in range(token.idx - offset, token.idx - offset + len(token))
                for j in char_pieces[c]
            }
        )
        if not found and not token.is_space:
            raise FeatureError(
                Errors.E554.format(
                    doc=span.doc.text[:60], token=token.text, idx=token.idx, source=source,
                    decoded=decoded[:80],
                )
            )  # fmt: skip
        out.append(found)
    return out
