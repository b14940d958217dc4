"""Meta's ``tokenizer.model`` files as transformers tokenizers with Meta's own token ids.

Meta ships two formats under the same file name:

* Llama 1/2 and Code Llama: a sentencepiece model (binary protobuf). BOS 1, EOS 2, no pad.
* Llama 3.x: a tiktoken rank file, one ``base64(token_bytes) rank`` per line, followed (in
  Meta's ``tokenizer.py``, not in the file) by 256 special tokens.

We detect the format from the content, never from the name, and build a fast tokenizer whose
ids are exactly the ones sentencepiece / tiktoken would produce.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

from ...errors import Errors, ModelLoadError

TokenizerFormat = Literal["sentencepiece", "tiktoken"]

# Meta's Llama 3 pre-tokenizer (llama3/tokenizer.py, ``pat_str``).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_RESERVED_SPECIAL_TOKENS = 256

# The chat template of Meta-Llama-3-*-Instruct.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def detect_format(path: Path) -> TokenizerFormat:
    """tiktoken files are ASCII lines ``base64 rank``; anything else is sentencepiece."""
    with open(path, "rb") as f:
        head = f.read(4096)
    first = head.split(b"\n", 1)[0].strip()
    parts = first.split()
    if len(parts) == 2 and parts[1].isdigit():
        try:
            base64.b64decode(parts[0], validate=True)
            return "tiktoken"
        except (binascii.Error, ValueError):
            pass
    return "sentencepiece"


def load_meta_tokenizer(path: Path, *, llama3_variant: str = "3") -> Tuple[Any, List[int]]:
    """Return (tokenizer, stop ids) for a Meta ``tokenizer.model`` of either format.

    ``llama3_variant`` picks the special-token names: "3" (Meta-Llama-3) or "3.1" (3.1 and
    later, which renamed some reserved tokens and added ``<|eom_id|>``)."""
    if detect_format(path) == "tiktoken":
        return tiktoken_tokenizer(path, variant=llama3_variant)
    return sentencepiece_tokenizer(path)


# -- sentencepiece (Llama 1/2, Code Llama) ---------------------------------------------------


def sentencepiece_tokenizer(path: Path) -> Tuple[Any, List[int]]:
    """A tokenizer reproducing sentencepiece's ids (BOS added, no EOS, no pad).

    transformers' own slow->fast conversion needs protobuf, which we do not depend on, so we
    assemble the fast tokenizer from sentencepiece's API with Llama's normalisation (identity,
    dummy prefix, byte fallback), check it on probe texts, and fall back to the slow
    sentencepiece-backed LlamaTokenizer if this model uses other settings."""
    sp = _load_sentencepiece(path)
    fast = _fast_from_sentencepiece(sp)
    if all(fast.encode(t, add_special_tokens=False) == sp.encode(t) for t in _PROBES):
        return fast, [int(sp.eos_id())]
    from transformers import LlamaTokenizer

    slow = LlamaTokenizer(vocab_file=str(path), legacy=True, add_bos_token=True)
    return slow, [int(sp.eos_id())]


# Texts that expose normalisation differences (spaces, newlines, digits, bytes, accents).
_PROBES = (
    "Hello world",
    "  two  spaces,\ttab\nnewline  ",
    "Numbers 1234567 and 3.14!",
    "naïve café – ünïcödé 日本語 🙂",
    "",
)


def _load_sentencepiece(path: Path) -> Any:
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise ModelLoadError(Errors.E195.format(path=str(path), error=error)) from e


def _fast_from_sentencepiece(sp: Any) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import LlamaTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges

    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    scores = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(n)]
    unk = sp.id_to_piece(sp.unk_id())
    tok = Tokenizer(
        BPE(vocab, generate_merges(vocab, scores), unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(prepend="\u2581"), normalizers.Replace(pattern=" ", content="\u2581")]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1),
        ]
    )
    specials = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    tok.add_special_tokens(
        [AddedToken(sp.id_to_piece(i), normalized=False, special=True) for i in specials]
    )
    return LlamaTokenizerFast(
        tokenizer_object=tok,
        bos_token=sp.id_to_piece(sp.bos_id()),
        eos_token=sp.id_to_piece(sp.eos_id()),
        unk_token=unk,
        add_bos_token=True,
        add_eos_token=False,
        legacy=True,
        clean_up_tokenization_spaces=False,
    )


# -- tiktoken (Llama 3.x) --------------------------------------------------------------------


def read_tiktoken_ranks(path: Path) -> Dict[bytes, int]:
    """Parse ``base64 rank`` lines; ranks must be 0..n-1 (Meta's files are)."""
    ranks: Dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error) as e:
                raise ModelLoadError(
                    Errors.E196.format(path=str(path), line=lineno, error=e)
                ) from e
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ModelLoadError(Errors.E197.format(path=str(path), last=len(ranks) - 1))
    return ranks


def llama3_special_tokens(*, variant: str = "3") -> List[str]:
    """The 256 special token names in Meta's order (ids follow the base vocabulary)."""
    if variant == "3":
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
        rest = [
            f"<|reserved_special_token_{i}|>" for i in range(5, NUM_RESERVED_SPECIAL_TOKENS - 5)
        ]
        return named + rest
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    rest = [
        f"<|reserved_special_token_{2 + i}|>"
        for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(named))
    ]
    return named + rest


def tiktoken_tokenizer(path: Path, *, variant: str = "3") -> Tuple[Any, List[int]]:
    """A PreTrainedTokenizerFast equal to Meta's tiktoken Tokenizer (BOS added on encode)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    ranks = read_tiktoken_ranks(path)
    vocab, merges = _vocab_and_merges(ranks)
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = llama3_special_tokens(variant=variant)
    # Added tokens get the next free ids, i.e. len(ranks) + position, as in Meta's code.
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = LLAMA3_CHAT_TEMPLATE  # type: ignore[attr-defined]
    stops = [tok.token_to_id(eos), tok.token_to_id("<|eot_id|>")]
    if variant != "3":
        stops.append(tok.token_to_id("<|eom_id|>"))
    return fast, [int(i) for i in stops]


def _vocab_and_merges(ranks: Dict[bytes, int]) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """tiktoken ranks -> byte-level BPE vocab and merges.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank, so a merge's
    priority is the rank of its result; with ``ignore_merges`` whole pre-tokens found in the
    vocabulary are taken as one token first, exactly as tiktoken does."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_encoder = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_encoder[x] for x in b)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges: List[Tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(to_str(m[3]), to_str(m[4])) for m in merges]
