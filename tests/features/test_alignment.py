"""spaCy tokens to pieces through the pieces' own bytes, on a SentencePiece-like tokenizer
(dummy prefix, "▁" spaces, byte fallback) and a tiktoken-like one (byte-level BPE): leading
spaces belong to no token, a multi-byte character split over pieces gets all of them."""

from __future__ import annotations

from typing import List

import pytest
import spacy

from spacy_llama.errors import FeatureError
from spacy_llama.features.alignment import align_span, piece_char_spans
from spacy_llama.models.pieces import PieceReader

from .tokenizers_ import sentencepiece_like, tiktoken_like

NLP = spacy.blank("en")


def aligned(tokenizer, text: str) -> List[List[int]]:
    doc = NLP.make_doc(text)
    ids = tokenizer(text)["input_ids"]
    return align_span(doc[:], ids, PieceReader(tokenizer), "test")


def test_sentencepiece_byte_fallback_and_leading_spaces() -> None:
    tok = sentencepiece_like()
    # <s> ▁Hello ▁w <0xC3> <0xB6> rld !
    assert aligned(tok, "Hello wörld!") == [[1], [2, 3, 4, 5], [6]]
    # <s> ▁Hello ▁ <0xF0> <0x9F> <0x98> <0x80> ▁big ▁city: the lone "▁" is only a space
    assert aligned(tok, "Hello 😀 big city") == [[1], [3, 4, 5, 6], [7], [8]]


def test_tiktoken_like_byte_level_pieces() -> None:
    tok = tiktoken_like()
    # <s> H e l l o Ġ w Ã ¶ r l d !
    assert aligned(tok, "Hello wörld!") == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11, 12], [13]]
    # <s> Ap p l e Ġis Ġ ð Ł ĺ Ģ Ġb i g Ġc ity .
    got = aligned(tok, "Apple is 😀 big city.")
    assert got == [[1, 2, 3, 4], [5], [7, 8, 9, 10], [11, 12, 13], [14, 15], [16]]


def test_a_multibyte_character_split_over_pieces_belongs_to_each() -> None:
    text, spans = piece_char_spans([b"a\xc3", b"\xa9b", b""])
    assert text == "aéb"
    assert spans == [(0, 2), (1, 3), (0, 0)]


def test_a_token_with_no_piece_raises() -> None:
    tok = sentencepiece_like()
    doc = NLP.make_doc("Hello world")
    ids = tok("Hello")["input_ids"]  # no piece for "world"
    with pytest.raises(FeatureError, match=r"\[E554\].*'world'"):
        align_span(doc[:], ids, PieceReader(tok), "test")


def test_a_space_token_may_have_no_piece() -> None:
    tok = sentencepiece_like()
    doc = NLP.make_doc("Hello  big")  # the second space is a token of its own
    assert [t.is_space for t in doc] == [False, True, False]
    ids = tok("Hello big")["input_ids"]  # the tokenizer's normalisation lost one space
    got = align_span(doc[:], ids, PieceReader(tok), "test")
    assert got[0] == [1] and got[2] != []
