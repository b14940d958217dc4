"""Which documents a run annotates: the bad-line policy, duplicate ids, the shard, the limit.

:func:`survey` reads the whole input once before any model is loaded, so input mistakes
are reported at once and the progress bar knows the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Set, Tuple

from spacy.vocab import Vocab

from ..errors import CorpusError, Errors
from .options import AnnotateOptions
from .paths import io_errors
from .reader import BadLine, Item, Record, in_shard, read_corpus
from .sinks import FailedSink


@dataclass
class Selector:
    """Applies the bad-line policy, duplicate ids, the shard and the limit, in that order."""

    shard: Optional[Tuple[int, int]]
    limit: Optional[int]
    on_bad_line: str
    failed: Optional[FailedSink] = None
    selected: int = 0
    bad: int = 0

    def __call__(self, items: Iterable[Item]) -> Iterator[Record]:
        seen: Set[str] = set()
        for item in items:
            if isinstance(item, Record) and item.id in seen:
                item = BadLine(item.source, f"duplicate id {item.raw_id!r}")
            if isinstance(item, BadLine):
                self._bad(item)
                continue
            seen.add(item.id)
            if not in_shard(item.id, self.shard):
                continue
            if self.limit is not None and self.selected >= self.limit:
                return
            self.selected += 1
            yield item

    def _bad(self, bad: BadLine) -> None:
        if self.on_bad_line == "stop":
            raise CorpusError(Errors.E008.format(line=bad.message()))
        self.bad += 1
        if self.failed is not None:
            with io_errors([self.failed.path]):  # a full disk is one message, as for outputs
                self.failed.write({"source": bad.source, "error": bad.reason})


def selector_for(
    opts: AnnotateOptions, shard: Optional[Tuple[int, int]], failed: Optional[FailedSink] = None
) -> Selector:
    return Selector(shard=shard, limit=opts.limit, on_bad_line=opts.on_bad_line, failed=failed)


def survey(opts: AnnotateOptions, shard: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """First pass: (documents selected, bad lines); raises on the first bad line if 'stop'."""
    selector = selector_for(opts, shard)
    for _ in selector(read_corpus(opts.input, vocab=Vocab())):
        pass
    if selector.selected == 0 and selector.bad == 0:
        raise CorpusError(Errors.E007.format(path=str(opts.input)))
    return selector.selected, selector.bad
