"""``annotate --ray``: the same annotation run on a Ray cluster.

The driver (this process) does what needs the whole corpus in order and nothing heavy: it
checks the input and output, picks the documents to annotate (the local run's bad-line
policy, duplicate ids, shard, limit and resume rules: ids only, no model), and writes the
results durably, batch by batch, in input order, through the local run's :class:`Outputs`.
Ray Data reads the input files and runs the pipeline in ``map_batches`` on a pool of actors
that each load the pipeline once. Both sides take :mod:`.lifecycle`'s steps, as the local
run does: output files, ``run.json`` and the failed list are the local run's, so a run
started with ``--ray`` resumes without it and the other way round.

On a multi-node cluster every node needs spacy-llama, the model files and the input at the
same paths (a shared filesystem), and the response cache should live on shared storage
(``--cache``) or be turned off (``--no-cache``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..errors import AnnotateError, CorpusError, Errors, PipelineError
from .batch_size import run_batch_size
from .failures import record_doc
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
from .loading import read_run_config
from .options import AnnotateOptions, RayOptions
from .reader import Item, Record, file_name, input_files, parse_shard, read_docbin, read_lines
from .records import doc_record, docbin_doc, format_doc
from .runinfo import RunInfo
from .selection import survey
from .sinks import Finished, Outputs
from .summary import Summary

INSTALL_HINT = "pip install 'spacy-llama[ray]'  (or: pip install 'ray[data]>=2.10')"
RUNNER = "ray"


def annotate_ray(opts: AnnotateOptions, ray_opts: RayOptions) -> Summary:
    """``annotate`` on Ray; raises the local run's errors for input/output problems."""
    start = time.perf_counter()
    if opts.n_process > 1:
        raise AnnotateError(Errors.E021)
    if opts.html is not None:
        raise AnnotateError(Errors.E834.format(path=opts.html))
    shard = parse_shard(opts.shard)
    input_files(opts.input)
    with claimed_outputs(opts):  # the driver writes the files: it holds the lock
        survey(opts, shard)
        batch_size = run_batch_size(
            read_run_config(opts.config, overrides=opts.overrides), opts.batch_size
        )
        return _annotate_ray(opts, ray_opts, shard, batch_size=batch_size, start=start)


def _annotate_ray(
    opts: AnnotateOptions,
    ray_opts: RayOptions,
    shard: Optional[Tuple[int, int]],
    *,
    batch_size: int,
    start: float,
) -> Summary:
    old = RunInfo(opts.output).resumable(opts.output) if opts.resume else None
    outputs = open_outputs(opts, Vocab())
    summary = Summary(failed_path=outputs.failed.path)
    record = RunRecord(opts, runner=RUNNER, config_hash=(old or {}).get("config_hash"))
    try:
        selected = select(opts, shard, outputs, summary)
        if selected:
            with ray_session(ray_opts):
                rows = annotated_rows(opts, ray_opts, selected, batch_size=batch_size)
                write_all(opts, rows, outputs, summary, record)
    finally:
        close_outputs(outputs)
        summary.seconds = time.perf_counter() - start
    record.finish(summary)
    return summary


# -- the driver's side --------------------------------------------------------------------
def select(
    opts: AnnotateOptions, shard: Optional[Tuple[int, int]], outputs: Outputs, summary: Summary
) -> Dict[str, str]:
    """id -> source of each document to annotate now. Keying on the source too keeps only
    the first of two lines sharing an id, as the local run does."""
    with pending_records(opts, shard, outputs, summary, vocab=Vocab()) as records:
        return {rec.id: rec.source for rec in records}


def write_all(
    opts: AnnotateOptions,
    rows: Iterator[List[Dict[str, Any]]],
    outputs: Outputs,
    summary: Summary,
    record: RunRecord,
) -> None:
    """The workers' rows, batch by batch: ``run.json`` is checked when the first batch
    arrives (the config hash covers the model's fingerprint, which only the workers load),
    before anything of that batch is written."""
    vocab = Vocab()
    for batch in rows:
        if not record.started:
            keys = batch[0].get("config_keys")
            record.start(batch[0]["config_hash"], json.loads(keys) if keys else None)
        ok = [
            r
            for r in batch
            if not count_outcome(
                outputs,
                summary,
                raw_id=json.loads(r["raw_id"]),
                source=r["source"],
                stats=json.loads(r["stats"]),
                error=r["error"] or None,
            )
        ]
        write_batch(outputs, summary, [finished_row(r, vocab) for r in ok])
        if opts.print_docs:
            for r in ok:
                print(r["printed"] + "\n", file=sys.stdout)


def finished_row(row: Dict[str, Any], vocab: Vocab) -> Finished:
    """A worker's result row back as what the sinks take."""
    return Finished(
        id=row["id"],
        record=json.loads(row["record"]) if row["record"] else None,
        doc=Doc(vocab).from_bytes(row["doc"]) if len(row["doc"]) else None,
    )


# -- Ray ----------------------------------------------------------------------------------
class ray_session:
    """Join ``address`` (or start a local cluster); shut down only what we started."""

    def __init__(self, ray_opts: RayOptions) -> None:
        self.ray_opts = ray_opts
        self.started = False

    def __enter__(self) -> ray_session:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.ray_opts.address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
            self.started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            import_ray().shutdown()


def import_ray() -> Any:
    """Ray is optional: the one place it is imported, with the install hint."""
    try:
        import ray
    except ImportError:
        raise AnnotateError(Errors.E022.format(hint=INSTALL_HINT)) from None
    return ray


def annotated_rows(
    opts: AnnotateOptions, ray_opts: RayOptions, selected: Dict[str, str], *, batch_size: int
) -> Iterator[List[Dict[str, Any]]]:
    """Read the input with Ray Data, annotate it on the actor pool, yield blocks in order."""
    ray = import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the same output order as the local run
    ctx.enable_progress_bars = not opts.quiet
    chunks = plan_chunks(Path(opts.input), selected, rows=batch_size)
    # One block per chunk, so the actors share the work. Reading is light next to
    # inference; it must not wait for a CPU the actors hold, or it would never feed them.
    ds = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    ds = ds.flat_map(read_chunk, fn_kwargs={"selected": ray.put(selected)}, num_cpus=0)
    cache = opts.cache_path
    ds = ds.map_batches(
        PipelineActor,
        fn_constructor_kwargs={
            "config": str(opts.config),
            "overrides": opts.overrides,
            "cache": str(cache.resolve()) if cache is not None else None,
            "threads": max(1, int(ray_opts.cpus_per_worker)),
            "jsonl": opts.output.suffix == ".jsonl",
            "docbin": opts.output.suffix == ".spacy" or opts.docbin is not None,
            "print_docs": opts.print_docs,
        },
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=ray_opts.workers),
        num_cpus=ray_opts.cpus_per_worker,
        num_gpus=ray_opts.gpus_per_worker or None,
    )
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="pandas"):
            if len(block):
                yield block.to_dict("records")
    except Exception as e:
        raise unwrap_ray_error(e) from None


def unwrap_ray_error(error: Exception) -> Exception:
    """A pipeline that cannot be built fails inside an actor; report it as the local run
    would (a message and exit code 2), not as a page of Ray traceback. Ray keeps the cause
    as an object for task errors, but only as text for a failed actor start, so there the
    exception's qualified name is looked for in the text."""
    kinds = (PipelineError, CorpusError, AnnotateError)
    cause: Optional[BaseException] = error
    while cause is not None:
        if isinstance(cause, kinds):
            return AnnotateError(str(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__
    text = str(error)
    for kind in kinds:
        marker = f"{kind.__module__}.{kind.__name__}: "
        if marker in text:
            return AnnotateError(text.rsplit(marker, 1)[1].strip())
    return error


def plan_chunks(root: Path, selected: Dict[str, str], *, rows: int) -> List[Dict[str, Any]]:
    """Cut the input into chunks of about ``rows`` selected documents: (file, byte offset,
    first and last line), so workers read their part of a file without reading the rest.
    A DocBin cannot be read in parts: each .spacy file is one chunk."""
    wanted = set(selected.values())
    chunks: List[Dict[str, Any]] = []
    for file in input_files(root):
        name = file_name(root, file)
        base = {"path": str(file), "name": name, "offset": 0, "first": 1, "last": 0}
        if file.suffix == ".spacy":
            chunks.append(base)
            continue
        chunks.extend(_line_chunks(file, name, wanted, rows=rows, base=base))
    return chunks or [{"path": "", "name": "", "offset": 0, "first": 1, "last": 0}]


def _line_chunks(
    file: Path, name: str, wanted: Set[str], *, rows: int, base: Dict[str, Any]
) -> Iterator[Dict[str, Any]]:
    chunk: Optional[Dict[str, Any]] = None
    count, offset = 0, 0
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if f"{name}:{lineno}" in wanted:
                if chunk is None:
                    chunk = {**base, "offset": offset, "first": lineno}
                chunk["last"], count = lineno, count + 1
                if count >= rows:
                    yield chunk
                    chunk, count = None, 0
            offset += len(raw)
    if chunk is not None:
        yield chunk


def read_chunk(chunk: Dict[str, Any], *, selected: Any) -> List[Dict[str, Any]]:
    """The selected records of one chunk, as rows (Ray Data runs this on the workers)."""
    import ray

    chosen: Dict[str, str] = ray.get(selected) if isinstance(selected, ray.ObjectRef) else selected
    if not chunk["path"]:
        return []
    path = Path(chunk["path"])
    items: Iterable[Item]
    if path.suffix == ".spacy":
        items = read_docbin(path, name=chunk["name"], vocab=Vocab())
    else:
        # the driver already dealt with bad lines: they are not selected
        items = read_lines(
            path,
            name=chunk["name"],
            jsonl=path.suffix == ".jsonl",
            offset=chunk["offset"],
            first=chunk["first"],
            last=chunk["last"],
        )
    return [
        record_row(rec)
        for rec in items
        if isinstance(rec, Record) and chosen.get(rec.id) == rec.source
    ]


def record_row(rec: Record) -> Dict[str, Any]:
    # JSON strings keep the heterogeneous input fields out of Arrow's schema inference.
    return {
        "id": rec.id,
        "raw_id": json.dumps(rec.raw_id),
        "text": rec.text,
        "fields": json.dumps(rec.fields, ensure_ascii=False),
        "source": rec.source,
        "doc": rec.doc.to_bytes() if rec.doc is not None else b"",
    }


RESULT_COLUMNS = [
    "id", "raw_id", "source", "error", "stats", "config_hash", "config_keys", "record", "doc",
    "printed",
]  # fmt: skip


class PipelineActor:
    """One worker: loads the pipeline once, then annotates batches of rows."""

    def __init__(
        self,
        *,
        config: str,
        overrides: Dict[str, Any],
        cache: Optional[str],
        threads: int,
        jsonl: bool,
        docbin: bool,
        print_docs: bool,
    ) -> None:
        from ..models.threads import configure_threads

        configure_threads(threads)  # cores are the actor's share, not the node's
        self.run = load_run_pipeline(Path(config), overrides=overrides)
        ready_for_run(self.run, cache=Path(cache) if cache else None)
        self.nlp = self.run.nlp
        self.jsonl, self.docbin, self.print_docs = jsonl, docbin, print_docs

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        records = [self._record(row) for row in batch.to_dict("records")]
        docs = [(record_doc(self.nlp, rec), rec) for rec in records]
        out = [
            self._result(doc, rec)
            for doc, rec in self.nlp.pipe(docs, as_tuples=True, batch_size=max(1, len(docs)))
        ]
        return pd.DataFrame(out, columns=RESULT_COLUMNS)

    def _record(self, row: Dict[str, Any]) -> Record:
        doc = Doc(self.nlp.vocab).from_bytes(row["doc"]) if len(row["doc"]) else None
        return Record(
            id=row["id"],
            raw_id=json.loads(row["raw_id"]),
            text=row["text"],
            fields=json.loads(row["fields"]),
            source=row["source"],
            doc=doc,
        )

    def _result(self, doc: Doc, rec: Record) -> Dict[str, Any]:
        stats, error = doc_outcome(doc)
        extensions = self.run.extensions
        result: Dict[str, Any] = {
            "id": rec.id,
            "raw_id": json.dumps(rec.raw_id),
            "source": rec.source,
            "error": error if error is not None else "",
            "stats": json.dumps(stats),
            "config_hash": self.run.config_hash,
            "config_keys": json.dumps(self.run.config_keys),
            "record": "",
            "doc": b"",
            "printed": "",
        }
        if error is not None:
            return result
        if self.jsonl:
            record = doc_record(doc, rec, extensions=extensions)
            result["record"] = json.dumps(record, ensure_ascii=False)
        if self.docbin:
            result["doc"] = bytes(docbin_doc(doc, rec).to_bytes())
        if self.print_docs:
            result["printed"] = format_doc(doc, rec, extensions=extensions)
        return result
