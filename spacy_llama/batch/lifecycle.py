"""The steps every corpus run takes, local (:mod:`.local`) or on Ray (:mod:`.ray`), in
this order:

1. :func:`claimed_outputs`: the output paths checked (not the input, writable, no
   contradicting options) and locked for the whole run, before any model is loaded;
2. :func:`load_run_pipeline`: the pipeline loaded and what decides its output hashed
   (:mod:`.identity`), before anything is added to it;
3. :class:`RunRecord` ``start``: a resume with another config or shard is refused, and
   ``run.json`` says the run is unfinished;
4. :func:`ready_for_run`: the response cache, failure isolation, the stats stamp and
   single-threaded workers;
5. :func:`open_outputs`, then per batch :func:`pending_records` (what is not done yet),
   :func:`doc_outcome` / :func:`count_outcome` (stats, failures) and :func:`write_batch`;
6. :func:`close_outputs` and :class:`RunRecord` ``finish`` (``run.json`` with the summary).

A Ray run does 2 and 4 on each actor and 3 on the driver when the first batch comes back
(the hash covers the model's fingerprint, which only the actors load). Both runners write
through the same calls, so a run started with ``--ray`` resumes without it and the other
way round. Every write turns an OSError (a full disk) into one message (:mod:`.paths`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..errors import AnnotateError, Errors
from ..generation.sqlite_cache import SQLiteCache
from ..pipeline import LlamaPipe
from .failures import isolate_failures
from .identity import config_identity, identity_hash
from .loading import load_pipeline
from .lock import locked
from .options import AnnotateOptions
from .paths import check_paths, io_errors, lock_targets
from .reader import Record, read_corpus
from .records import pipeline_extensions
from .run_stats import COMPONENT as RUN_STATS
from .runinfo import RunInfo, run_info
from .selection import selector_for
from .sinks import ERROR_KEY, STATS_KEY, Finished, Outputs
from .summary import Summary
from .workers import single_threaded_workers

MAX_ERROR = 2000  # characters of a failure's reason kept in the failed list


# -- 1. the outputs, claimed before any model is loaded -----------------------------------
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


# -- 2. and 4. the pipeline ---------------------------------------------------------------
@dataclass
class RunPipeline:
    """A loaded pipeline and what decides its output (hashed before the run adds to it)."""

    nlp: Language
    config_keys: Dict[str, str]
    config_hash: str
    extensions: List[str] = field(default_factory=list)  # what records carry (ready_for_run)


def load_run_pipeline(
    config: Path, *, overrides: Dict[str, Any], announce: bool = False
) -> RunPipeline:
    nlp = load_pipeline(config, overrides=overrides, announce=announce)
    keys = config_identity(nlp)
    return RunPipeline(nlp=nlp, config_keys=keys, config_hash=identity_hash(keys))


def ready_for_run(run: RunPipeline, *, cache: Optional[Path], n_process: int = 1) -> None:
    """The run's response cache, the extensions its records carry, failure isolation and
    the stats stamp (after the config was hashed: they change ``nlp.config``)."""
    set_cache(run.nlp, path=cache)
    run.extensions = pipeline_extensions(run.nlp)
    prepare_for_run(run.nlp, n_process=n_process)


def set_cache(nlp: Language, *, path: Optional[Path]) -> Optional[SQLiteCache]:
    """Give every llama component without a cache one at ``path``; ``None`` removes caches."""
    shared = SQLiteCache(path) if path is not None else None
    for _, pipe in nlp.pipeline:
        if isinstance(pipe, LlamaPipe):
            pipe.use_run_cache(shared)
    return shared


def prepare_for_run(nlp: Language, *, n_process: int = 1) -> None:
    """Install failure isolation and the stats stamp (after hashing the config)."""
    nlp.default_error_handler = isolate_failures  # type: ignore[assignment]
    for _, pipe in nlp.pipeline:
        try:
            getattr(pipe, "set_error_handler", lambda handler: None)(isolate_failures)
        except AttributeError:
            # Not every component takes one (spaCy's cython parser and NER cannot store it);
            # those keep raising, which stops the run: finished batches are already saved.
            pass
    if RUN_STATS not in nlp.pipe_names:
        nlp.add_pipe(RUN_STATS, last=True)
    if n_process > 1:
        single_threaded_workers()


# -- 3. and 6. run.json ---------------------------------------------------------------------
@dataclass
class RunRecord:
    """``OUTPUT.run.json`` over a run: ``start`` (once) refuses a resume with another
    config or shard and records the run as unfinished; ``finish`` records it as finished,
    with its summary. ``config_hash``: the hash known before ``start`` (a Ray resume keeps
    the old run's when no batch comes back)."""

    opts: AnnotateOptions
    runner: Optional[str] = None  # "ray"; None for a local run
    config_hash: Optional[str] = None
    config_keys: Optional[Dict[str, str]] = None
    started: bool = False

    @property
    def info(self) -> RunInfo:
        return RunInfo(self.opts.output)

    def start(self, config_hash: str, config_keys: Optional[Dict[str, str]]) -> None:
        if self.started:
            return
        info = self.info
        if self.opts.resume:
            info.check(
                config_hash=config_hash,
                shard=self.opts.shard,
                output=self.opts.output,
                config_keys=config_keys,
            )
        self.config_hash, self.config_keys, self.started = config_hash, config_keys, True
        write_info(info, self._record(finished=False))

    def finish(self, summary: Summary) -> None:
        write_info(self.info, {**self._record(finished=True), "summary": summary.to_json()})

    def _record(self, *, finished: bool) -> Dict[str, Any]:
        return run_info(
            self.opts,
            self.config_hash,
            finished=finished,
            runner=self.runner,
            config_keys=self.config_keys,
        )


def write_info(info: RunInfo, record: Dict[str, Any]) -> None:
    with io_errors([info.path]):
        info.write(record)


# -- 5. the outputs, batch by batch ---------------------------------------------------------
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


@contextmanager
def pending_records(
    opts: AnnotateOptions,
    shard: Optional[Tuple[int, int]],
    outputs: Outputs,
    summary: Summary,
    *,
    vocab: Vocab,
) -> Iterator[Iterator[Record]]:
    """The selected records (bad-line policy, duplicate ids, shard, limit) not written
    yet, read lazily; the skipped ones are counted as they pass, the bad lines once the
    reading is over."""
    selector = selector_for(opts, shard, failed=outputs.failed)
    try:
        yield pending(selector(read_corpus(opts.input, vocab=vocab)), outputs.done, summary)
    finally:
        summary.failed += selector.bad


def pending(records: Iterable[Record], done: Set[str], summary: Summary) -> Iterator[Record]:
    """The records whose id is not in ``done``; the others count as skipped."""
    for rec in records:
        if rec.id in done:
            summary.skipped += 1
        else:
            yield rec


def doc_outcome(doc: Doc) -> Tuple[Dict[str, int], Optional[str]]:
    """A finished doc's engine counts and, when it failed, why (both taken off the doc:
    they are not annotations)."""
    stats = doc.user_data.pop(STATS_KEY, None) or {}
    error = doc.user_data.pop(ERROR_KEY, None)
    return stats, None if error is None else str(error)[:MAX_ERROR]


def count_outcome(
    outputs: Outputs,
    summary: Summary,
    *,
    raw_id: Any,
    source: str,
    stats: Optional[Mapping[str, int]],
    error: Optional[str],
) -> bool:
    """Add a doc's counts to the summary; a failed doc goes to the failed list (and not to
    the output). Whether it failed."""
    summary.add_stats(stats)
    if error is None:
        return False
    summary.failed += 1
    write_failed(outputs, {"id": raw_id, "source": source, "error": error})
    return True


def write_batch(outputs: Outputs, summary: Summary, items: Sequence[Finished]) -> None:
    """One durable write of a batch's finished docs."""
    write_finished(outputs, items)
    summary.done += len(items)


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
