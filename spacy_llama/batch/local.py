"""Annotate a corpus with a pipeline in this process (or ``--n-process`` children).

The run reads the input twice: a quick first pass finds bad lines and counts the work
(before a model is loaded, so input mistakes are reported at once), the second streams
documents through ``nlp.pipe``. Each batch is written and fsynced before the next one is
read, so a killed run loses at most the batch in flight, and ``resume`` skips every id
already written. See :mod:`.sinks` and :mod:`.runinfo` for the files. Before the model is
loaded, the output paths are checked (:mod:`.paths`: not the input, writable) and locked
for the whole run (:mod:`.lock`: one writer per output); the Ray runner does the same.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch
from spacy.vocab import Vocab

from ..errors import AnnotateError, Errors
from ..views import SAMPLE_DOCS, render, wrap_page
from .files import write_atomic
from .lock import locked
from .options import AnnotateOptions
from .paths import check_paths, io_errors, lock_targets
from .prepare import (
    config_identity,
    identity_hash,
    load_pipeline,
    prepare_for_run,
    record_doc,
    run_batch_size,
    set_cache,
)
from .reader import Record, input_files, parse_shard, read_corpus
from .records import finished, format_doc, pipeline_extensions
from .runinfo import RunInfo, run_info
from .selection import selector_for, survey
from .sinks import ERROR_KEY, STATS_KEY, Finished, Outputs
from .summary import Summary

ZONE_DOCS = 2000  # docs per spaCy memory zone (with --n-process, workers restart per zone)


def check_output(opts: AnnotateOptions) -> None:
    """Output options that contradict each other."""
    if opts.output.suffix not in (".jsonl", ".spacy"):
        raise AnnotateError(Errors.E010.format(name=opts.output.name))
    if opts.docbin is not None and opts.docbin.suffix != ".spacy":
        raise AnnotateError(Errors.E011)
    if opts.resume and opts.overwrite:
        raise AnnotateError(Errors.E012)


def check_existing(opts: AnnotateOptions) -> None:
    """An existing output is only continued or replaced when asked to. Checked under the
    lock: a run that finished just before we locked has written its output by then."""
    exists = [p for p in (opts.output, opts.docbin) if p is not None and p.exists()]
    if exists and not (opts.resume or opts.overwrite):
        raise AnnotateError(Errors.E013.format(path=exists[0]))


@contextmanager
def claimed_outputs(opts: AnnotateOptions) -> Iterator[None]:
    """Check the run's output paths (not the input, writable) and hold their locks for the
    whole run, local or Ray; all before a model is loaded. The input must exist."""
    check_output(opts)
    check_paths(opts)
    with locked(lock_targets(opts)):
        check_existing(opts)
        if opts.resume:  # the input it was started on, before any model is loaded
            RunInfo(opts.output).check_input(input=opts.input, output=opts.output)
        yield


def open_outputs(opts: AnnotateOptions, vocab: Vocab) -> Outputs:
    """The run's sinks (the same for a local and a Ray run, so either resumes the other)."""
    with io_errors([opts.output]):
        return Outputs(
            opts.output,
            docbin=opts.docbin,
            resume=opts.resume,
            vocab=vocab,
            part_size=opts.part_size,
        )


def output_files(outputs: Outputs) -> List[Path]:
    sinks = [outputs.jsonl.path if outputs.jsonl is not None else None]
    sinks.append(outputs.docbin.folder if outputs.docbin is not None else None)
    return [p for p in sinks if p is not None]


def write_finished(outputs: Outputs, items: Sequence[Finished]) -> None:
    """One durable write of a batch; a failing write (a full disk) becomes one message."""
    with io_errors(output_files(outputs)):
        outputs.write(items)


def write_failed(outputs: Outputs, record: Dict[str, Any]) -> None:
    with io_errors([outputs.failed.path]):
        outputs.failed.write(record)


def close_outputs(outputs: Outputs) -> None:
    with io_errors(output_files(outputs)):
        outputs.close()


def write_info(info: RunInfo, record: Dict[str, Any]) -> None:
    with io_errors([info.path]):
        info.write(record)


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
    nlp = load_pipeline(opts.config, overrides=opts.overrides, announce=not opts.quiet)
    keys = config_identity(nlp)
    run_hash = identity_hash(keys)
    info = RunInfo(opts.output)
    if opts.resume:
        info.check(config_hash=run_hash, shard=opts.shard, output=opts.output, config_keys=keys)
    write_info(info, run_info(opts, run_hash, finished=False, runner=None, config_keys=keys))
    set_cache(nlp, path=opts.cache_path)
    extensions = pipeline_extensions(nlp)
    prepare_for_run(nlp, n_process=opts.n_process)
    outputs = open_outputs(opts, nlp.vocab)
    summary = Summary(failed_path=outputs.failed.path, load_seconds=time.perf_counter() - start)
    run = LocalRun(opts, nlp, outputs, summary, extensions=extensions)
    try:
        run.process(shard=shard, todo=selected - len(outputs.done))
    finally:
        close_outputs(outputs)
        summary.seconds = time.perf_counter() - start
        if opts.html is not None:  # what was drawn, also when the run was interrupted
            write_atomic(opts.html, wrap_page(run.views).encode("utf8"))
    done = run_info(opts, run_hash, finished=True, runner=None, config_keys=keys)
    record = {**done, "summary": summary.to_json()}
    write_info(info, record)
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

        selector = selector_for(self.opts, shard, failed=self.outputs.failed)
        batch_size = run_batch_size(self.nlp.config, self.opts.batch_size)
        records = self._pending(selector(read_corpus(self.opts.input, vocab=self.nlp.vocab)))
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
        try:
            # Strings and lexemes of a zone's docs are freed when it closes: without zones
            # the vocab grows with every new word of the corpus.
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
            self.summary.failed += selector.bad

    def _pending(self, records: Iterable[Record]) -> Iterator[Record]:
        done: Set[str] = self.outputs.done
        for rec in records:
            if rec.id in done:
                self.summary.skipped += 1
            else:
                yield rec

    def _docs(self, records: Iterable[Record]) -> Iterator[Tuple[Doc, Record]]:
        for rec in records:
            # the context is pickled with n_process: it must not carry the doc twice
            yield record_doc(self.nlp, rec), dataclasses.replace(rec, doc=None)

    def _write_batch(self, batch: List[Tuple[Doc, Record]]) -> None:
        from tqdm import tqdm

        ok = [(doc, rec) for doc, rec in batch if not self._failed(doc, rec)]
        write_finished(
            self.outputs,
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
        self.summary.done += len(ok)
        if self.opts.html is not None:  # drawn now: a memory zone frees the docs' strings
            self.views += [render(doc) for doc, _ in ok[: SAMPLE_DOCS - len(self.views)]]
        if self.opts.print_docs:
            for doc, rec in ok:
                text = format_doc(doc, rec, extensions=self.extensions)
                tqdm.write(text + "\n", file=sys.stdout)

    def _failed(self, doc: Doc, rec: Record) -> bool:
        self.summary.add_stats(doc.user_data.pop(STATS_KEY, None))
        error = doc.user_data.pop(ERROR_KEY, None)
        if error is None:
            return False
        self.summary.failed += 1
        failed = {"id": rec.raw_id, "source": rec.source, "error": str(error)[:2000]}
        write_failed(self.outputs, failed)
        return True
