"""Annotate a corpus with a pipeline in this process (or ``--n-process`` children).

The run reads the input twice: a quick first pass finds bad lines and counts the work
(before a model is loaded, so input mistakes are reported at once), the second streams
documents through ``nlp.pipe``. Each batch is written and fsynced before the next one is
read, so a killed run loses at most the batch in flight, and ``resume`` skips every id
already written. See :mod:`.sinks` and :mod:`.runinfo` for the files. Before the model is
loaded, the output paths are checked (:mod:`.paths`: not the input, writable) and locked
for the whole run (:mod:`.lock`: one writer per output). The steps of a run, shared with
the Ray runner, are :mod:`.lifecycle`'s; this module is the local second pass.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Iterable, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch

from ..views import SAMPLE_DOCS, render, wrap_page
from .batch_size import run_batch_size
from .failures import record_doc
from .files import write_atomic
from .lifecycle import (
    RunRecord,
    claimed_outputs,
    close_outputs,
    count_outcome,
    doc_outcome,
    load_run_pipeline,
    open_outputs,
    pending_records,
    ready_for_run,
    write_batch,
)
from .options import AnnotateOptions
from .reader import Record, input_files, parse_shard
from .records import finished, format_doc
from .selection import survey
from .sinks import Outputs
from .summary import Summary

ZONE_DOCS = 2000  # docs per spaCy memory zone (with --n-process, workers restart per zone)


def annotate(opts: AnnotateOptions) -> Summary:
    """Run the whole annotation; raises the errors of :mod:`spacy_llama.errors` for input
    and output problems, KeyboardInterrupt after writing what was finished."""
    start = time.perf_counter()
    shard = parse_shard(opts.shard)
    input_files(opts.input)
    with claimed_outputs(opts):
        selected, _ = survey(opts, shard)
        return _annotate(opts, shard, selected=selected, start=start)


def _annotate(
    opts: AnnotateOptions, shard: Optional[Tuple[int, int]], *, selected: int, start: float
) -> Summary:
    pipeline = load_run_pipeline(opts.config, overrides=opts.overrides, announce=not opts.quiet)
    record = RunRecord(opts)
    record.start(pipeline.config_hash, pipeline.config_keys)
    ready_for_run(pipeline, cache=opts.cache_path, n_process=opts.n_process)
    outputs = open_outputs(opts, pipeline.nlp.vocab)
    summary = Summary(failed_path=outputs.failed.path, load_seconds=time.perf_counter() - start)
    run = LocalRun(opts, pipeline.nlp, outputs, summary, extensions=pipeline.extensions)
    try:
        run.process(shard=shard, todo=selected - len(outputs.done))
    finally:
        close_outputs(outputs)
        summary.seconds = time.perf_counter() - start
        if opts.html is not None:  # what was drawn, also when the run was interrupted
            write_atomic(opts.html, wrap_page(run.views).encode("utf8"))
    record.finish(summary)
    return summary


@dataclasses.dataclass
class LocalRun:
    """The second pass: records -> ``nlp.pipe`` -> the sinks, batch by batch."""

    opts: AnnotateOptions
    nlp: Language
    outputs: Outputs
    summary: Summary
    extensions: List[str]
    views: List[str] = dataclasses.field(default_factory=list)  # --html: drawn docs

    def process(self, *, shard: Optional[Tuple[int, int]], todo: int) -> None:
        from tqdm import tqdm

        batch_size = run_batch_size(self.nlp.config, self.opts.batch_size)
        # disable=None: no bar when stderr is not a terminal (logs, CI), where its carriage
        # returns would interleave with --print's output
        bar = tqdm(
            total=max(todo, 0),
            unit="doc",
            disable=True if self.opts.quiet else None,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        began = time.perf_counter()
        pending = pending_records(
            self.opts, shard, self.outputs, self.summary, vocab=self.nlp.vocab
        )
        try:
            with pending as records:
                # Strings and lexemes of a zone's docs are freed when it closes: without
                # zones the vocab grows with every new word of the corpus.
                for chunk in minibatch(records, size=max(ZONE_DOCS, batch_size)):
                    with self.nlp.memory_zone():
                        stream = self.nlp.pipe(
                            self._docs(chunk),
                            as_tuples=True,
                            batch_size=batch_size,
                            n_process=self.opts.n_process,
                        )
                        for batch in minibatch(stream, size=batch_size):
                            self._write_batch(batch)
                            bar.update(len(batch))
                            secs = max(time.perf_counter() - began, 1e-9)
                            bar.set_postfix_str(
                                f"{self.summary.generated_tokens / secs:.1f} tok/s", refresh=False
                            )
        finally:
            bar.close()

    def _docs(self, records: Iterable[Record]) -> Iterator[Tuple[Doc, Record]]:
        for rec in records:
            # the context is pickled with n_process: it must not carry the doc twice
            yield record_doc(self.nlp, rec), dataclasses.replace(rec, doc=None)

    def _write_batch(self, batch: List[Tuple[Doc, Record]]) -> None:
        from tqdm import tqdm

        ok = [(doc, rec) for doc, rec in batch if not self._failed(doc, rec)]
        write_batch(
            self.outputs,
            self.summary,
            [
                finished(
                    doc,
                    rec,
                    extensions=self.extensions,
                    jsonl=self.outputs.wants_record,
                    docbin=self.outputs.wants_doc,
                )
                for doc, rec in ok
            ],
        )
        if self.opts.html is not None:  # drawn now: a memory zone frees the docs' strings
            self.views += [render(doc) for doc, _ in ok[: SAMPLE_DOCS - len(self.views)]]
        if self.opts.print_docs:
            for doc, rec in ok:
                text = format_doc(doc, rec, extensions=self.extensions)
                tqdm.write(text + "\n", file=sys.stdout)

    def _failed(self, doc: Doc, rec: Record) -> bool:
        stats, error = doc_outcome(doc)
        return count_outcome(
            self.outputs,
            self.summary,
            raw_id=rec.raw_id,
            source=rec.source,
            stats=stats,
            error=error,
        )
