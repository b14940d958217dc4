"""Grammar-constrained decoding: the only module that imports the grammar engine.

A :class:`~spacy_llama.types.Constraint` (a JSON schema, a regular expression, or a list of
choices) is compiled by llguidance against the model's tokenizer into a matcher; each
constrained sequence being decoded carries its own copy (:class:`RowGrammar`). Before a
token is chosen the row's logits are masked to the tokens the grammar allows; the chosen
token is then accepted into the row's matcher. A row whose grammar can go no further is
finished; a draft (prompt lookup) is cut to the prefix the grammar allows before the model
spends a pass on it.

Why llguidance (``benchmarks/grammar_engines.py``, SmolLM2's 49152 tokens): xgrammar fills
masks faster (0.07 ms against 0.3 ms for 32 rows a step, both well under 1% of a decode
step of the smallest model), but pulls in triton (1 GB, a GPU compiler) on Linux;
outlines-core compiles the same schema 25x slower and advances 50x slower. llguidance is
3 MB with no dependencies, compiles in ~3 ms and checks a draft without consuming it.

Compiled grammars are cached per tokenizer (and vocabulary size and stop tokens), by
(kind, spec), least recently used first out, ``CACHE_SIZE`` of them.
"""

from __future__ import annotations

import json
import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import ConstraintError, Errors
from ..models.pieces import PieceReader
from ..types import Constraint

ENGINE = "llguidance"
CACHE_SIZE = 64
# JSON as json.dumps writes it: ", " and ": ", no newlines. Flexible whitespace lets a small
# model emit blank lines until max_new_tokens.
JSON_DEFAULTS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
SETTING = {"json_schema": "json_schema", "regex": "regex", "choices": "choices"}


def grammar_text(constraint: Constraint) -> str:
    """The llguidance grammar (its JSON form) of ``constraint``; ConstraintError if the spec
    is not even well-formed (the tokenizer-specific checks come in :func:`compile`)."""
    from llguidance import LLMatcher

    kind, spec = constraint.kind, constraint.spec
    if kind == "json_schema":
        try:
            json.loads(spec)
        except ValueError as e:
            raise ConstraintError(Errors.E421.format(error=e)) from None
        return str(LLMatcher.grammar_from_json_schema(spec, defaults=JSON_DEFAULTS))
    if kind == "regex":
        return str(LLMatcher.grammar_from_regex(spec))
    if kind == "choices":
        return str(LLMatcher.grammar_from_lark(choices_lark(parse_choices(spec))))
    raise ConstraintError(Errors.E425.format(kind=kind))


def parse_choices(spec: str) -> List[str]:
    try:
        choices = json.loads(spec)
    except ValueError:
        choices = None
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise ConstraintError(Errors.E423.format(spec=spec[:200]))
    return choices


def choices_lark(choices: Sequence[str]) -> str:
    # JSON string literals are lark string literals (same escapes)
    return "start: " + " | ".join(json.dumps(c) for c in choices)


def alternative_texts(constraint: Constraint) -> List[str]:
    """Every value a closed set of the constraint offers, as the text it is written as: the
    choices, or each ``enum`` member and ``const`` of a JSON schema as JSON (``alternatives.py``
    scores the ones the grammar allows at a position as wholes)."""
    if constraint.kind == "choices":
        choices = parse_choices(constraint.spec)
        return choices if len(choices) <= MAX_ALTERNATIVES else []
    if constraint.kind != "json_schema":
        return []
    found: Dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "enum" and isinstance(value, list):
                    if len(value) > MAX_ALTERNATIVES:  # e.g. a doc's substrings
                        continue
                    for v in value:
                        found.setdefault(json.dumps(v, ensure_ascii=False), None)
                elif key == "const":
                    found.setdefault(json.dumps(value, ensure_ascii=False), None)
                else:
                    walk(value)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(constraint.spec))
    return list(found)


MAX_ALTERNATIVES = 32  # a closed set larger than this is decoded token by token


# -- the tokenizer, as llguidance sees it ----------------------------------------------------
def token_bytes(tokenizer: Any, n_vocab: int) -> Tuple[List[bytes], List[int]]:
    """The bytes of every token id below ``n_vocab`` (b"" for ids the tokenizer lacks: a
    model whose output layer has more rows than the tokenizer has tokens), and the ids of
    special tokens (b"\\xff" + name, which llguidance never lets text produce)."""
    reader = PieceReader(tokenizer)
    special = {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special
    } | set(tokenizer.all_special_ids)
    pieces = {i: t for t, i in tokenizer.get_vocab().items()}
    out: List[bytes] = []
    for i in range(n_vocab):
        piece = pieces.get(i)
        if piece is None:
            out.append(b"")
        elif i in special:
            out.append(b"\xff" + piece.encode("utf-8"))
        else:
            out.append(reader.bytes_of(piece))
    return out, sorted(i for i in special if i < n_vocab)


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads: token bytes, special ids, an encoder."""

    def __init__(self, tokenizer: Any, n_vocab: int, stop_ids: Sequence[int]) -> None:
        self.tokens, self.special_token_ids = token_bytes(tokenizer, n_vocab)
        self.eos_token_id = stop_ids[0] if stop_ids else tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self._tokenizer = tokenizer

    def __call__(self, text: Any) -> List[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])


# -- compiled grammars and per-row state -----------------------------------------------------
class GrammarVocab:
    """What searches over a grammar (``closing.py``, ``alternatives.py``) need of the
    vocabulary: llguidance's tokenizer, each token's bytes, and one token per single byte."""

    def __init__(self, tokenizer: Any, token_bytes: List[bytes], stop_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer  # llguidance.LLTokenizer
        self.token_bytes = token_bytes
        self.stop_ids = list(stop_ids)
        byte_tokens: Dict[int, int] = {}
        for i, b in enumerate(token_bytes):
            if len(b) == 1 and b[0] not in byte_tokens:
                byte_tokens[b[0]] = i
        self.byte_tokens = byte_tokens  # byte value -> a token that is exactly that byte
        self._tokenized: Dict[bytes, Tuple[int, ...]] = {}  # tokenize's cache (enum values)
        self.byte_values = sorted(byte_tokens)
        self.byte_ids = [byte_tokens[b] for b in self.byte_values]
        import numpy as np

        self.byte_array = np.asarray(self.byte_values, dtype=np.int64)
        # tokens that begin with a quote: the ones that end a JSON string (max_string_tokens)
        self.quote_first = torch.tensor([b[:1] == b'"' for b in token_bytes], dtype=torch.bool)
        # tokens that end on half a UTF-8 character or a backslash: a quote cannot follow
        self.open_end = torch.tensor([_open_end(b) for b in token_bytes], dtype=torch.bool)

    def tokenize(self, data: bytes) -> List[int]:
        hit = self._tokenized.get(data)
        if hit is None:
            if len(self._tokenized) >= 65536:
                self._tokenized.clear()
            hit = self._tokenized[data] = tuple(self.tokenizer.tokenize_bytes(data))
        return list(hit)


def _open_end(data: bytes) -> bool:
    """``data`` ends on an unfinished UTF-8 character or an odd run of backslashes."""
    slashes = len(data) - len(data.rstrip(b"\\"))
    if slashes % 2:
        return True
    for k in range(1, min(4, len(data)) + 1):
        b = data[-k]
        if b & 0xC0 != 0x80:  # the last lead (or ASCII) byte: does its sequence fit?
            need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
            return need > k
    return False  # only continuation bytes: unknown, allowed


# a capped string's last tokens may not end on half a character (UTF-8 takes up to 4 bytes)
OPEN_SLACK = 3


class RowGrammar:
    """One sequence's position in its grammar."""

    def __init__(self, matcher: Any, kind: str, vocab: Optional[GrammarVocab] = None) -> None:
        self.matcher = matcher
        self.kind = kind
        self.vocab = vocab
        self.alternatives: Sequence[str] = ()  # the closed sets' members, as JSON text
        self.string_cap = 0  # max_string_tokens (0: off), see cap_string
        self._last: Optional[int] = None  # the last token accepted one by one
        self._in_string = False  # the output so far ends inside a string
        self._run = 0  # tokens holding bytes of that string
        self._escape = False  # that string ends on an unpaired backslash
        self._free = False  # that string is free (capped)
        # The output's skeleton (closing.py's cache key): its bytes less the characters of
        # value strings and of the string being written; one entry per accepted token, so
        # rollback restores it. Kept for JSON schemas only.
        self._skeleton: List[Tuple[bytes, int, int, int, bytes]] = [(b"", 0, -1, -1, b"")]
        self.closings: Optional[Dict[bytes, List[int]]] = None  # shared per compiled grammar

    def copy(self) -> RowGrammar:
        """An independent copy at the same position (for a search; this one is unchanged).
        The copy keeps no skeleton (searches key nothing by it)."""
        out = RowGrammar(self.matcher.deep_copy(), self.kind, self.vocab)
        out.alternatives = self.alternatives
        return out

    @property
    def skeleton(self) -> Optional[bytes]:
        """What the shortest closing from here depends on, for a JSON output: the bytes so
        far with the characters of every value string (and of the one being written)
        left out, keys kept. None where it is not tracked (other kinds, copies)."""
        if self.closings is None:
            return None
        return self._skeleton[-1][0]

    def _track(self, tokens: Sequence[int]) -> None:
        vocab = self.vocab
        if self.closings is None or vocab is None:
            return
        for t in tokens:
            # state: skeleton, 0 outside a string / 1 inside / 2 after a backslash, where the
            # last closed string's characters start and end in it (-1: none pending), the
            # open string's characters
            skel, mode, start, end, text = self._skeleton[-1]
            out = bytearray(skel)
            chars = bytearray(text)
            for b in vocab.token_bytes[int(t)]:
                if mode == 2:
                    mode = 1
                    chars.append(b)
                elif mode == 1:
                    if b == 0x22:
                        mode, start, end = 0, len(out), len(out) + len(chars)
                        out += chars
                        out.append(b)
                        chars.clear()
                    else:
                        mode = 2 if b == 0x5C else 1
                        chars.append(b)
                elif b in b" \t\r\n":
                    out.append(b)
                else:
                    if start >= 0 and b != 0x3A:  # not a key: its characters go
                        del out[start:end]
                    start = end = -1
                    out.append(b)
                    if b == 0x22:
                        mode = 1
            self._skeleton.append((bytes(out), mode, start, end, bytes(chars)))

    def cap_string(self, ok: torch.Tensor) -> None:
        """``max_string_tokens``: limit ``ok`` (this step's allowed ids, changed in place)
        to the tokens that close the string being written once it holds ``string_cap``
        tokens. Called once per masked step, before the step's token is chosen.

        The last accepted token's bytes are run through a small JSON lexer (in a string or
        not, a pending backslash), so the row knows where strings open and close, ``", "``
        closing one and opening the next in one token included. A string is free (capped)
        once a step inside it allows most of the vocabulary: an unbounded or ``maxLength``
        string; keys, ``enum`` values (a doc's substrings) and numbers allow few tokens and
        are never cut. The tokens counted are those holding at least one of the string's
        bytes. In its last ``OPEN_SLACK + 1`` tokens a string may not end on half a
        character or a pending backslash, so that a quote can close it at the cap; when
        none is allowed even so (a ``minLength`` or ``pattern`` not met yet) the string
        goes on until one is."""
        vocab = self.vocab
        assert vocab is not None
        last = vocab.token_bytes[self._last] if self._last is not None else b""
        self._last = None
        inside, escape, run, free = self._in_string, self._escape, self._run, self._free
        counted = False
        for b in last:
            if not inside:
                if b == 0x22:  # an opening quote
                    inside, escape, run, free, counted = True, False, 0, False, False
                continue
            if escape:
                escape = False
            elif b == 0x5C:
                escape = True
            elif b == 0x22:  # the closing quote
                inside = False
                continue
            if not counted:
                run, counted = run + 1, True
        if inside and not free:
            free = int(ok.sum()) * 2 > ok.numel()
        self._in_string, self._escape, self._run, self._free = inside, escape, run, free
        if not (inside and free):
            return
        cap = self.string_cap
        if run >= cap and not escape:
            keep = ok & vocab.quote_first[: ok.numel()]
        elif run >= cap - 1 - OPEN_SLACK:
            keep = ok & ~vocab.open_end[: ok.numel()]
        else:
            return
        if bool(keep.any()):
            ok.copy_(keep)

    def forced_tokens(self) -> List[int]:
        """Tokens the grammar forces next (llguidance's fast-forward tokens)."""
        return list(self.matcher.compute_ff_tokens())

    def forced_bytes(self) -> bytes:
        """Bytes the grammar forces next, whatever their tokenization."""
        return bytes(self.matcher.compute_ff_bytes())

    def allowed_tokens(self) -> Any:
        """The ids the grammar allows next (a numpy array)."""
        import numpy as np

        return np.flatnonzero(self._bits())

    def allows(self, ids: Any) -> Any:
        """Whether the grammar allows each of ``ids`` next (a numpy bool array)."""
        return self._bits()[ids].astype(bool)

    def _bits(self) -> Any:
        import numpy as np

        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")

    def completes(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` from here make a complete output (this row is unchanged)."""
        ids = [int(t) for t in tokens]
        if self.matcher.validate_tokens(ids) != len(ids):  # checked first: no error logged
            return False
        check = self.matcher.deep_copy()
        return bool(check.consume_tokens(ids) and check.is_accepting())

    def accept_all(self, tokens: Sequence[int]) -> bool:
        """Advance by every token of ``tokens``; False if one is forbidden."""
        # a whole value (alternatives.py) or a closing: no string is left open after it
        self._last, self._in_string, self._run, self._free = None, False, 0, False
        self._track(tokens)
        return bool(self.matcher.consume_tokens([int(t) for t in tokens])) if tokens else True

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed tokens into row ``row`` of a contiguous int32 CPU bitmask (32
        ids a word). Not through ``llguidance.torch``: importing it runs ``torch.compile``'s
        decorator, which imports dynamo (4 s)."""
        v = bitmask[row]
        self.matcher.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())

    def accept(self, token: int) -> bool:
        """Advance by ``token``; False (and the matcher in its error state) if forbidden."""
        self._last = int(token)
        self._track((token,))
        return bool(self.matcher.consume_token(int(token)))

    @property
    def terminated(self) -> bool:
        """Nothing but a stop token can follow: the output is complete."""
        return bool(self.matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """The output so far is a complete match (more may still follow)."""
        return bool(self.matcher.is_accepting())

    def valid_prefix(self, draft: Sequence[int]) -> int:
        """How many leading tokens of ``draft`` the grammar allows from here (the matcher is
        left where it was)."""
        if not draft:
            return 0
        return int(self.matcher.validate_tokens([int(t) for t in draft]))

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` accepted tokens."""
        if n:
            self.matcher.rollback(int(n))
            if self.closings is not None:
                del self._skeleton[max(1, len(self._skeleton) - int(n)) :]


class CompiledGrammar:
    """A constraint compiled for one tokenizer; ``start()`` gives a fresh row state."""

    def __init__(
        self,
        matcher: Any,
        kind: str,
        vocab: Optional[GrammarVocab] = None,
        alternatives: Sequence[str] = (),
    ) -> None:
        self._pristine = matcher
        self.kind = kind
        self.vocab = vocab
        self.alternatives = tuple(alternatives)
        self.minimal: Optional[Tuple[Optional[List[int]]]] = None  # closing.minimal_tokens
        # closing.closing_tokens' cache: the closing found from each skeleton (a hint, always
        # checked before use); shared by every row of this grammar
        self.closings: Dict[bytes, List[int]] = {}

    def start(self) -> RowGrammar:
        row = RowGrammar(self._pristine.deep_copy(), self.kind, self.vocab)
        row.alternatives = self.alternatives
        if self.kind == "json_schema":
            row.closings = self.closings
        return row


class GrammarCompiler:
    """Compiles constraints against one tokenizer; an LRU cache of the results."""

    def __init__(self, tokenizer: Any, n_vocab: int, stop_ids: Sequence[int]) -> None:
        from llguidance import LLTokenizer
        from llguidance._tokenizer import TokenizerWrapper

        self.n_vocab = n_vocab
        vocab = _Vocabulary(tokenizer, n_vocab, list(stop_ids))
        eos = sorted(set(stop_ids)) or [vocab.eos_token_id]
        self.tokenizer = LLTokenizer(TokenizerWrapper(vocab), n_vocab=n_vocab, eos_token=eos)
        self.vocab = GrammarVocab(self.tokenizer, vocab.tokens, eos)
        self._cache: OrderedDict[Tuple[str, str], CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, constraint: Constraint) -> CompiledGrammar:
        """ConstraintError (naming the setting and llguidance's message) if it cannot."""
        key = (constraint.kind, constraint.spec)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        from llguidance import LLMatcher

        try:
            grammar = grammar_text(constraint)
        except (ValueError, TypeError) as e:  # llguidance's own check of the spec
            if isinstance(e, ConstraintError):
                raise
            raise ConstraintError(describe(constraint, str(e))) from None
        matcher = LLMatcher(self.tokenizer, grammar)
        if matcher.is_error():
            raise ConstraintError(describe(constraint, matcher.get_error()))
        compiled = CompiledGrammar(
            matcher, constraint.kind, self.vocab, alternative_texts(constraint)
        )
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled


def describe(constraint: Constraint, error: str) -> str:
    """A coded message for a constraint llguidance rejects."""
    setting = SETTING.get(constraint.kind, constraint.kind)
    first = error.strip().splitlines()[0] if error.strip() else error
    if "Unimplemented keys" in error or "Unknown format" in error:
        return Errors.E424.format(setting=setting, engine=ENGINE, error=first)
    return Errors.E422.format(setting=setting, engine=ENGINE, error=" ".join(error.split()))


_CompilerKey = Tuple[int, Tuple[int, ...]]
_COMPILERS: weakref.WeakKeyDictionary[Any, Dict[_CompilerKey, GrammarCompiler]] = (
    weakref.WeakKeyDictionary()
)
_COMPILERS_LOCK = threading.Lock()


def compiler_for(tokenizer: Any, n_vocab: int, stop_ids: Sequence[int]) -> GrammarCompiler:
    """The shared compiler of ``tokenizer`` (building llguidance's view of a vocabulary
    takes ~0.5 s); it goes when the tokenizer goes."""
    key = (int(n_vocab), tuple(sorted(set(int(i) for i in stop_ids))))
    with _COMPILERS_LOCK:
        per = _COMPILERS.setdefault(tokenizer, {})
        if key not in per:
            per[key] = GrammarCompiler(tokenizer, n_vocab, key[1])
        return per[key]


def model_vocab_size(model: Any, tokenizer: Any) -> int:
    """Rows of the output layer (the logits' width): may exceed the tokenizer's tokens.
    ``len(tokenizer)`` is read once per tokenizer and count of added tokens: a fast
    tokenizer builds its whole vocabulary for it (~50 ms, at every constrained request)."""
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    added = len(getattr(tokenizer, "added_tokens_encoder", ()) or ())
    try:
        known = _TOKENIZER_SIZES.get(tokenizer)
    except TypeError:  # not weakly referenceable
        return max(int(rows or 0), len(tokenizer))
    if known is None or known[0] != added:
        known = (added, len(tokenizer))
        _TOKENIZER_SIZES[tokenizer] = known
    return max(int(rows or 0), known[1])


_TOKENIZER_SIZES: weakref.WeakKeyDictionary[Any, Tuple[int, int]] = weakref.WeakKeyDictionary()


# -- masks on logits -------------------------------------------------------------------------
def bitmask(rows: int, n_vocab: int) -> torch.Tensor:
    return torch.zeros((rows, (n_vocab + 31) // 32), dtype=torch.int32)


_EXECUTOR: List[Any] = []  # llguidance's thread pool, made on first use


def fill_rows(grammars: Sequence[RowGrammar], mask: torch.Tensor) -> None:
    """Row ``k`` of ``mask`` gets what ``grammars[k]`` allows; several rows are filled on
    llguidance's threads (it releases the GIL)."""
    if len(grammars) == 1:
        grammars[0].fill(mask, 0)
        return
    from llguidance import LLExecutor

    if not _EXECUTOR:
        _EXECUTOR.append(LLExecutor())
    pairs = [(g.matcher, k) for k, g in enumerate(grammars)]
    _EXECUTOR[0].unsafe_compute_mask_ptr(pairs, mask.data_ptr(), mask.shape[1] * 4, len(pairs))


def allowed(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width) bool from an int32 bitmask (bit ``j`` of word ``w`` is id 32w + j).
    numpy's unpackbits: torch's shift-and-mask over (rows, words, 32) takes ~50 ms here."""
    import numpy as np

    data = mask.numpy()
    if sys.byteorder != "little":
        data = data.astype("<i4")
    bits = np.unpackbits(data.view(np.uint8), axis=-1, bitorder="little")
    return torch.from_numpy(bits[:, :width].view(np.bool_))


def mask_logits(
    logits: torch.Tensor, rows: Sequence[int], grammars: Sequence[RowGrammar], n_vocab: int
) -> torch.Tensor:
    """``logits`` (B, V) with each row ``rows[k]`` limited to what ``grammars[k]`` allows
    (-inf elsewhere), as a new tensor; other rows are untouched (the same values)."""
    mask = bitmask(len(rows), max(n_vocab, logits.shape[-1]))
    fill_rows(grammars, mask)
    ok = allowed(mask, logits.shape[-1])
    for k, g in enumerate(grammars):
        if g.string_cap:
            g.cap_string(ok[k])
    ok = ok.to(logits.device)
    none = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    if len(rows) == logits.shape[0]:  # every row constrained: one pass, no copy first
        return torch.where(ok, logits, none)
    out = logits.clone()
    idx = torch.tensor(list(rows), device=logits.device)
    out[idx] = torch.where(ok, logits[idx], none)
    return out
