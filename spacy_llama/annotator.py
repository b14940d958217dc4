"""Annotate a corpus with a pipeline without losing a document.

The run reads the input twice: a quick first pass finds bad lines and counts the work
(before a model is loaded, so input mistakes are reported at once), the second streams
documents through ``nlp.pipe``. Each batch is written and fsynced before the next one is
read, so a killed run loses at most the batch in flight, and ``resume`` skips every id
already written. See :mod:`spacy_llama.runstate` for the files.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch
from spacy.vocab import Vocab

from .batch_pipeline import (
    ERROR_KEY,
    STATS_KEY,
    config_hash,
    load_pipeline,
    prepare_for_run,
    set_cache,
)
from .corpus import (
    FIELDS_KEY,
    ID_KEY,
    BadLine,
    CorpusError,
    Item,
    Record,
    in_shard,
    input_files,
    parse_shard,
    read_corpus,
)
from .records import doc_record, format_doc, pipeline_extensions
from .runstate import DocBinSink, FailedSink, JsonlSink, RunInfo, RunStateError, side_path

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130
ZONE_DOCS = 2000  # docs per spaCy memory zone (with --n-process, workers restart per zone)


@dataclass
class AnnotateOptions:
    config: Path
    input: Path
    output: Path
    overrides: Dict[str, Any] = field(default_factory=dict)
    docbin: Optional[Path] = None  # a DocBin folder written besides a JSONL output
    resume: bool = False
    overwrite: bool = False
    shard: Optional[str] = None
    batch_size: Optional[int] = None
    n_process: int = 1
    limit: Optional[int] = None
    cache: Optional[Path] = None
    no_cache: bool = False
    on_bad_line: str = "stop"
    quiet: bool = False
    print_docs: bool = False
    part_size: int = 1000


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # of ``seconds``: reading the config and loading the model
    generated_tokens: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    failed_path: Optional[Path] = None

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failed_path"] = str(self.failed_path) if self.failed_path else None
        return data

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def line(self) -> str:
        # rates over the annotation itself: loading a model is paid once per run
        secs = max(self.seconds - self.load_seconds, 1e-9)
        text = (
            f"{self.done} docs done, {self.skipped} skipped (already done), {self.failed} failed "
            f"in {self.seconds:.1f}s ({self.load_seconds:.1f}s loading the pipeline; then "
            f"{self.done / secs:.1f} docs/s, {self.generated_tokens / secs:.1f} tokens/s; "
            f"{self.model_calls} model calls, {self.cache_hits} cache hits)"
        )
        if self.failed:
            text += f". FAILED documents are listed in {self.failed_path}"
        return text


class AnnotateError(Exception):
    """Any problem reported as a message and exit code 2 (input, output, config)."""


# -- selecting what to process ------------------------------------------------------------
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
            raise CorpusError(
                f"{bad.message()}. Fix the line, or pass --on-bad-line skip to record it in "
                "the failed file and go on."
            )
        self.bad += 1
        if self.failed is not None:
            self.failed.write({"source": bad.source, "error": bad.reason})


def survey(opts: AnnotateOptions, shard: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """First pass: (documents selected, bad lines); raises on the first bad line if 'stop'."""
    selector = Selector(shard=shard, limit=opts.limit, on_bad_line=opts.on_bad_line)
    for _ in selector(read_corpus(opts.input, vocab=Vocab())):
        pass
    if selector.selected == 0 and selector.bad == 0:
        raise CorpusError(f"Input {str(opts.input)!r} contains no documents.")
    return selector.selected, selector.bad


# -- the run ------------------------------------------------------------------------------
def check_output(opts: AnnotateOptions) -> None:
    if opts.output.suffix not in (".jsonl", ".spacy"):
        raise AnnotateError(f"OUTPUT must end in .jsonl or .spacy, not {opts.output.name!r}.")
    if opts.docbin is not None and opts.docbin.suffix != ".spacy":
        raise AnnotateError("--docbin must name a folder ending in .spacy.")
    if opts.resume and opts.overwrite:
        raise AnnotateError("--resume and --overwrite exclude each other.")
    exists = [p for p in (opts.output, opts.docbin) if p is not None and p.exists()]
    if exists and not (opts.resume or opts.overwrite):
        raise AnnotateError(
            f"{exists[0]} already exists: pass --resume to continue that run, or --overwrite "
            "to start again."
        )


class Outputs:
    """The sinks of one run; a doc counts as done once every sink has it."""

    def __init__(self, opts: AnnotateOptions, nlp: Language) -> None:
        self.failed = FailedSink(side_path(opts.output, ".failed.jsonl"))
        self.jsonl: Optional[JsonlSink] = None
        self.docbin: Optional[DocBinSink] = None
        folder = opts.output if opts.output.suffix == ".spacy" else opts.docbin
        if opts.output.suffix == ".jsonl":
            self.jsonl = JsonlSink(opts.output, resume=opts.resume)
        if folder is not None:
            self.docbin = DocBinSink(
                folder, resume=opts.resume, vocab=nlp.vocab, part_size=opts.part_size
            )
        sets = [s.done for s in (self.jsonl, self.docbin) if s is not None]
        self.done: Set[str] = set.intersection(*sets) if sets else set()

    def write(self, items: List[Tuple[Doc, Record]], *, extensions: List[str]) -> None:
        if self.jsonl is not None:
            self.jsonl.write([(r.id, doc_record(d, r, extensions=extensions)) for d, r in items])
        if self.docbin is not None:
            for doc, rec in items:
                fields = {k: v for k, v in rec.fields.items() if k != "text"}
                if fields:
                    doc.user_data[FIELDS_KEY] = fields
            self.docbin.write([(r.id, d) for d, r in items])

    def close(self) -> None:
        for sink in (self.jsonl, self.docbin):
            if sink is not None:
                sink.close()


def annotate(opts: AnnotateOptions) -> Summary:
    """Run the whole annotation; raises AnnotateError/CorpusError/RunStateError for input
    and output problems, KeyboardInterrupt after writing what was finished."""
    start = time.perf_counter()
    shard = parse_shard(opts.shard)
    input_files(opts.input)
    check_output(opts)
    selected, _ = survey(opts, shard)
    nlp = load_pipeline(opts.config, overrides=opts.overrides)
    run_hash = config_hash(nlp)
    info = RunInfo(opts.output)
    if opts.resume:
        info.check(config_hash=run_hash, shard=opts.shard, output=opts.output)
    info.write(_run_info(opts, run_hash, finished=False))
    if not opts.no_cache:
        set_cache(nlp, path=opts.cache or side_path(opts.output, ".cache.sqlite"))
    else:
        set_cache(nlp, path=None)
    extensions = pipeline_extensions(nlp)
    prepare_for_run(nlp, n_process=opts.n_process)
    outputs = Outputs(opts, nlp)
    summary = Summary(failed_path=outputs.failed.path, load_seconds=time.perf_counter() - start)
    try:
        todo = selected - len(outputs.done)
        _process(opts, nlp, outputs, summary, shard=shard, todo=todo, extensions=extensions)
    finally:
        outputs.close()
        summary.seconds = time.perf_counter() - start
    info.write({**_run_info(opts, run_hash, finished=True), "summary": summary.to_json()})
    return summary


def _run_info(opts: AnnotateOptions, run_hash: str, *, finished: bool) -> Dict[str, Any]:
    from . import __version__

    return {
        "config_hash": run_hash,
        "shard": opts.shard,
        "config": str(opts.config),
        "input": str(opts.input),
        "overrides": {k: repr(v) for k, v in opts.overrides.items()},
        "spacy_llama": __version__,
        "finished": finished,
    }


def _process(
    opts: AnnotateOptions,
    nlp: Language,
    outputs: Outputs,
    summary: Summary,
    *,
    shard: Optional[Tuple[int, int]],
    todo: int,
    extensions: List[str],
) -> None:
    from tqdm import tqdm

    selector = Selector(
        shard=shard, limit=opts.limit, on_bad_line=opts.on_bad_line, failed=outputs.failed
    )
    batch_size = opts.batch_size or default_batch_size(nlp)
    records = _pending(selector(read_corpus(opts.input, vocab=nlp.vocab)), outputs.done, summary)
    # disable=None: no bar when stderr is not a terminal (logs, CI), where its carriage
    # returns would interleave with --print's output
    bar = tqdm(
        total=max(todo, 0),
        unit="doc",
        disable=True if opts.quiet else None,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    began = time.perf_counter()
    try:
        # Strings and lexemes of a zone's docs are freed when it closes: without zones the
        # vocab grows with every new word of the corpus.
        for chunk in minibatch(records, size=max(ZONE_DOCS, batch_size)):
            with nlp.memory_zone():
                docs = _to_docs(nlp, chunk)
                stream = nlp.pipe(
                    docs, as_tuples=True, batch_size=batch_size, n_process=opts.n_process
                )
                for batch in minibatch(stream, size=batch_size):
                    _write_batch(opts, outputs, summary, batch, extensions=extensions)
                    bar.update(len(batch))
                    rate = summary.generated_tokens / max(time.perf_counter() - began, 1e-9)
                    bar.set_postfix_str(f"{rate:.1f} tok/s", refresh=False)
    finally:
        bar.close()
        summary.failed += selector.bad


def _write_batch(
    opts: AnnotateOptions,
    outputs: Outputs,
    summary: Summary,
    batch: List[Tuple[Doc, Record]],
    *,
    extensions: List[str],
) -> None:
    from tqdm import tqdm

    ok = [(doc, rec) for doc, rec in batch if not _failed(doc, rec, outputs, summary)]
    outputs.write(ok, extensions=extensions)
    summary.done += len(ok)
    if opts.print_docs:
        for doc, rec in ok:
            tqdm.write(format_doc(doc, rec, extensions=extensions) + "\n", file=sys.stdout)


def default_batch_size(nlp: Language) -> int:
    """A llama component's micro-batch: small enough that progress shows and a kill loses
    little, large enough that the model still sees full batches."""
    llamas = [pipe for _, pipe in nlp.pipeline if hasattr(pipe, "engine")]
    sizes = [getattr(pipe, "batch_size", None) for pipe in llamas]
    return min([nlp.batch_size, *(s for s in sizes if isinstance(s, int) and s > 0)])


def _pending(records: Iterable[Record], done: Set[str], summary: Summary) -> Iterator[Record]:
    for rec in records:
        if rec.id in done:
            summary.skipped += 1
        else:
            yield rec


def _to_docs(nlp: Language, records: Iterable[Record]) -> Iterator[Tuple[Doc, Record]]:
    for rec in records:
        doc = rec.doc if rec.doc is not None else nlp.make_doc(rec.text)
        doc.user_data[ID_KEY] = rec.raw_id
        yield doc, dataclasses.replace(rec, doc=None)  # the context is pickled with n_process


def _failed(doc: Doc, rec: Record, outputs: Outputs, summary: Summary) -> bool:
    counts = doc.user_data.pop(STATS_KEY, None) or [0, 0, 0]
    summary.generated_tokens += counts[0]
    summary.model_calls += counts[1]
    summary.cache_hits += counts[2]
    error = doc.user_data.pop(ERROR_KEY, None)
    if error is None:
        return False
    summary.failed += 1
    outputs.failed.write({"id": rec.raw_id, "source": rec.source, "error": str(error)[:2000]})
    return True


__all__ = [
    "AnnotateError",
    "AnnotateOptions",
    "CorpusError",
    "RunStateError",
    "Summary",
    "annotate",
]
