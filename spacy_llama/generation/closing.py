"""The shortest way to finish a constrained output from where it stands.

llguidance tells, at any position, which tokens may follow and which bytes are forced; it
has no "shortest completion" query. This module searches for one with those two answers:
a shortest-path search over bytes (Dijkstra: every byte costs one), where forced bytes are
taken in one move, a position offering few bytes tries them all, and a position offering
many (inside a string or a number) tries only the few that end things soonest (the closing
quote, brackets, a comma, the smallest values). The bytes found are then tokenized (the
vocabulary's own tokenization, checked by the matcher; one token per byte if it refuses).

The result is a complete output (the grammar accepts it), not always the shortest there
is: the search gives up after ``MAX_EXPANSIONS`` positions. The budget logic in
``decode_step.py`` only needs a completion that is known to fit, and is exact about that.
"""

from __future__ import annotations

import heapq
import itertools
from typing import List, Optional, Tuple

from .grammar import CompiledGrammar, RowGrammar

# Bytes that end a value or a container soonest, best first: close a string, an object, an
# array; separators; then the shortest values (0, a, true/false/null's first letters).
PREFERRED = b'"}],:0a1 tfn-.e'
BRANCH_ALL = 16  # a position offering at most this many bytes tries them all
BRANCH_FREE = 3  # else it tries this many of PREFERRED
MAX_EXPANSIONS = 400
MAX_PATHS = 4
TOKEN_SLACK_BYTES = 2  # longer continuations still tried for fewer tokens


def closing_paths(row: RowGrammar) -> List[bytes]:
    """Complete continuations of ``row`` as bytes, shortest first: the shortest found and
    the others up to ``TOKEN_SLACK_BYTES`` longer (fewer bytes is not always fewer tokens);
    ``[b""]`` if ``row`` is complete already, ``[]`` if the search finds none. ``row`` is
    left unchanged."""
    vocab = row.vocab
    assert vocab is not None  # every compiled grammar has one
    if row.accepting:
        return [b""]
    count = itertools.count()
    heap: List[Tuple[int, int, bytes, RowGrammar]] = [(0, next(count), b"", row.copy())]
    found: List[bytes] = []
    for _ in range(MAX_EXPANSIONS):
        if not heap or (found and heap[0][0] > len(found[0]) + TOKEN_SLACK_BYTES):
            break
        _, _, path, g = heapq.heappop(heap)
        if g.accepting:
            found.append(path)
            if len(found) >= MAX_PATHS:
                break
            continue
        forced = g.forced_bytes()
        if forced:
            if _consume(g, forced):
                heapq.heappush(heap, (len(path) + len(forced), next(count), path + forced, g))
            continue
        offered = vocab.byte_array[g.allows(vocab.byte_ids)].tolist()
        if len(offered) > BRANCH_ALL:
            ranked = [b for b in PREFERRED if b in offered]
            offered = ranked[:BRANCH_FREE] or sorted(offered)[:1]
        for b in offered:
            child = g.copy()
            if _consume(child, bytes([b])):
                heapq.heappush(heap, (len(path) + 1, next(count), path + bytes([b]), child))
    return found


def closing_tokens(row: RowGrammar) -> Optional[List[int]]:
    """The fewest tokens among :func:`closing_paths`' continuations, each tokenized by the
    vocabulary and checked against ``row``'s grammar (one token per byte if it refuses the
    tokenization); None if there is none.

    Cached per skeleton (``RowGrammar.skeleton``: the output less its value strings'
    characters), for every row of the grammar: a row writing a string, or a row at the
    same place of the structure as another, takes the closing found before once it checks
    that it completes from here; a search runs only where none does. The closing reused
    is complete, not always the shortest from here (a ``minLength`` met in one row and
    not in another is found by the check)."""
    key, cache = row.skeleton, row.closings
    if key is not None and cache is not None:
        hit = cache.get(key)
        if hit is not None and row.completes(hit):
            return list(hit)
    best = _search_closing(row)
    if key is not None and cache is not None and best is not None:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = list(best)
    return best


CACHE_LIMIT = 4096  # skeletons kept per compiled grammar


def _search_closing(row: RowGrammar) -> Optional[List[int]]:
    vocab = row.vocab
    assert vocab is not None
    best: Optional[List[int]] = None
    for data in closing_paths(row):
        tokens = vocab.tokenize(data) if data else []
        check = row.copy()
        if not (check.accept_all(tokens) and check.accepting):
            tokens = [vocab.byte_tokens[b] for b in data]  # what the search walked
        if best is None or len(tokens) < len(best):
            best = tokens
    return best


def _consume(g: RowGrammar, data: bytes) -> bool:
    vocab = g.vocab
    assert vocab is not None
    if any(b not in vocab.byte_tokens for b in data):
        return False
    return g.accept_all([vocab.byte_tokens[b] for b in data])


def minimal_tokens(compiled: CompiledGrammar) -> Optional[List[int]]:
    """The shortest complete output found from the start of ``compiled``, computed once
    per compiled grammar; None when the search finds none."""
    if compiled.minimal is None:
        compiled.minimal = (closing_tokens(compiled.start()),)
    return compiled.minimal[0]
