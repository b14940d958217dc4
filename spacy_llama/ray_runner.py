"""``annotate --ray``: the same annotation run on a Ray cluster.

The driver (this process) does what needs the whole corpus in order and nothing heavy: it
checks the input and output, picks the documents to annotate (the local command's bad-line
policy, duplicate ids, shard, limit and resume rules: ids only, no model), and writes the
results durably, batch by batch, in input order. Ray Data reads the input files and runs
the pipeline in ``map_batches`` on a pool of actors that each load the pipeline once.
Output files, ``run.json`` and the failed list are the local command's, so a run started
with ``--ray`` resumes without it and the other way round.

On a multi-node cluster every node needs spacy-llama, the model files and the input at the
same paths (a shared filesystem), and the response cache should live on shared storage
(``--cache``) or be turned off (``--no-cache``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from spacy.tokens import Doc
from spacy.util import load_config
from spacy.vocab import Vocab

from .annotator import (
    AnnotateError,
    AnnotateOptions,
    Selector,
    Summary,
    check_output,
    survey,
)
from .corpus import (
    FIELDS_KEY,
    ID_KEY,
    CorpusError,
    Item,
    Record,
    input_files,
    parse_json_line,
    parse_shard,
    read_corpus,
    read_docbin,
)
from .runstate import PRIVATE_KEYS, DocBinSink, FailedSink, JsonlSink, RunInfo, side_path

INSTALL_HINT = "pip install 'spacy-llama[ray]'  (or: pip install 'ray[data]>=2.9')"


@dataclass
class RayOptions:
    address: Optional[str] = None  # None: start a local cluster (or join the running one)
    workers: int = 2  # actors, each with its own copy of the pipeline
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0  # also the torch threads of each actor


def annotate_ray(opts: AnnotateOptions, ray_opts: RayOptions) -> Summary:
    """``annotate`` on Ray; raises the local command's errors for input/output problems."""
    start = time.perf_counter()
    if opts.n_process > 1:
        raise AnnotateError("--n-process does not apply with --ray; use --workers N.")
    shard = parse_shard(opts.shard)
    input_files(opts.input)
    check_output(opts)
    survey(opts, shard)
    settings = pipeline_settings(opts)
    sinks = Sinks(opts, Vocab())
    summary = Summary(failed_path=sinks.failed.path)
    info = RunInfo(opts.output)
    old_hash = (info.read() or {}).get("config_hash") if opts.resume else None
    run = RunHash(info=info, opts=opts, known=old_hash)
    try:
        selected = select(opts, shard, sinks, summary)
        if selected:
            with ray_session(ray_opts):
                rows = annotated_rows(opts, ray_opts, selected, batch_size=settings[1])
                _write_all(opts, rows, sinks, summary, run)
    finally:
        sinks.close()
        summary.seconds = time.perf_counter() - start
    run.finish(summary)
    return summary


# -- the driver's side --------------------------------------------------------------------
def pipeline_settings(opts: AnnotateOptions) -> Tuple[str, int]:
    """(lang, batch size) from the config, without building the pipeline. The default batch
    is the local command's: the smallest of [nlp] batch_size and the llama micro-batches."""
    path = opts.config / "config.cfg" if opts.config.is_dir() else opts.config
    if not path.exists():
        raise AnnotateError(f"Config or pipeline {str(opts.config)!r} does not exist.")
    try:
        config = load_config(path, overrides=opts.overrides, interpolate=False)
    except Exception as e:
        raise AnnotateError(f"Could not read the config {path}:\n{e}") from None
    nlp_cfg = config.get("nlp", {})
    sizes = [int(nlp_cfg.get("batch_size") or 64)]
    for comp in config.get("components", {}).values():
        if isinstance(comp, dict) and comp.get("factory") == "llama":
            sizes.append(int(comp.get("batch_size") or 16))
    return str(nlp_cfg.get("lang", "xx")), int(opts.batch_size or min(sizes))


class Sinks:
    """The local command's output files (the driver writes them; workers only compute)."""

    def __init__(self, opts: AnnotateOptions, vocab: Vocab) -> None:
        self.failed = FailedSink(side_path(opts.output, ".failed.jsonl"))
        self.jsonl = JsonlSink(opts.output, resume=opts.resume) if _is_jsonl(opts) else None
        folder = opts.output if opts.output.suffix == ".spacy" else opts.docbin
        self.docbin = (
            DocBinSink(folder, resume=opts.resume, vocab=vocab, part_size=opts.part_size)
            if folder is not None
            else None
        )
        self.vocab = vocab
        sets = [s.done for s in (self.jsonl, self.docbin) if s is not None]
        self.done = set.intersection(*sets) if sets else set()

    def write(self, rows: List[Dict[str, Any]]) -> None:
        if self.jsonl is not None:
            self.jsonl.write([(r["id"], json.loads(r["record"])) for r in rows])
        if self.docbin is not None:
            self.docbin.write([(r["id"], Doc(self.vocab).from_bytes(r["doc"])) for r in rows])

    def close(self) -> None:
        for sink in (self.jsonl, self.docbin):
            if sink is not None:
                sink.close()


def _is_jsonl(opts: AnnotateOptions) -> bool:
    return opts.output.suffix == ".jsonl"


def select(
    opts: AnnotateOptions, shard: Optional[Tuple[int, int]], sinks: Sinks, summary: Summary
) -> Dict[str, str]:
    """id -> source of each document to annotate now. Keying on the source too keeps only
    the first of two lines sharing an id, as the local command does."""
    selector = Selector(
        shard=shard, limit=opts.limit, on_bad_line=opts.on_bad_line, failed=sinks.failed
    )
    chosen: Dict[str, str] = {}
    for rec in selector(read_corpus(opts.input, vocab=Vocab())):
        if rec.id in sinks.done:
            summary.skipped += 1
        else:
            chosen[rec.id] = rec.source
    summary.failed += selector.bad
    return chosen


@dataclass
class RunHash:
    """``run.json``: the config hash is computed by the workers (it covers the model's
    fingerprint, which needs the model), so it is checked when the first batch arrives,
    before anything of that batch is written."""

    info: RunInfo
    opts: AnnotateOptions
    known: Optional[str] = None
    checked: bool = field(default=False)

    def check(self, config_hash: str) -> None:
        if self.checked:
            return
        if self.opts.resume:
            self.info.check(config_hash=config_hash, shard=self.opts.shard, output=self.opts.output)
        self.known, self.checked = config_hash, True
        self.info.write(self._info(finished=False))

    def finish(self, summary: Summary) -> None:
        self.info.write({**self._info(finished=True), "summary": summary.to_json()})

    def _info(self, *, finished: bool) -> Dict[str, Any]:
        from . import __version__

        opts = self.opts
        return {
            "config_hash": self.known,
            "shard": opts.shard,
            "config": str(opts.config),
            "input": str(opts.input),
            "overrides": {k: repr(v) for k, v in opts.overrides.items()},
            "spacy_llama": __version__,
            "finished": finished,
            "runner": "ray",
        }


def _write_all(
    opts: AnnotateOptions,
    rows: Iterator[List[Dict[str, Any]]],
    sinks: Sinks,
    summary: Summary,
    run: RunHash,
) -> None:
    for batch in rows:
        run.check(batch[0]["config_hash"])
        ok = [r for r in batch if not r["error"]]
        for r in batch:
            counts = json.loads(r["stats"])
            summary.generated_tokens += counts[0]
            summary.model_calls += counts[1]
            summary.cache_hits += counts[2]
            if r["error"]:
                summary.failed += 1
                failed = {"id": json.loads(r["raw_id"]), "source": r["source"], "error": r["error"]}
                sinks.failed.write(failed)
        sinks.write(ok)
        summary.done += len(ok)
        if opts.print_docs:
            for r in ok:
                print(r["printed"] + "\n", file=sys.stdout)


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
    try:
        import ray
    except ImportError:
        raise AnnotateError(f"--ray needs Ray Data: {INSTALL_HINT}") from None
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
    ds = ds.map_batches(
        PipelineActor,
        fn_constructor_kwargs={
            "config": str(opts.config),
            "overrides": opts.overrides,
            "cache": None if opts.no_cache else str(_cache_path(opts)),
            "threads": max(1, int(ray_opts.cpus_per_worker)),
            "jsonl": _is_jsonl(opts),
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


def _cache_path(opts: AnnotateOptions) -> Path:
    return (opts.cache or side_path(opts.output, ".cache.sqlite")).resolve()


def unwrap_ray_error(error: Exception) -> Exception:
    """A pipeline that cannot be built fails inside an actor; report it as the local
    command would (a message and exit code 2), not as a page of Ray traceback. Ray keeps
    the cause as an object for task errors, but only as text for a failed actor start."""
    from .batch_pipeline import PipelineError

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
        name = file.name if root.is_file() else file.relative_to(root).as_posix()
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
        items = _read_lines(path, chunk)
    return [
        record_row(rec)
        for rec in items
        if isinstance(rec, Record) and chosen.get(rec.id) == rec.source
    ]


def _read_lines(path: Path, chunk: Dict[str, Any]) -> Iterator[Item]:
    """Lines ``first..last`` of a .txt/.jsonl file, parsed as :func:`corpus.read_lines`
    does (the driver already dealt with bad lines: they are not selected)."""
    name, jsonl = chunk["name"], path.suffix == ".jsonl"
    with path.open("rb") as f:
        f.seek(chunk["offset"])
        for lineno, raw in enumerate(f, chunk["first"]):
            if lineno > chunk["last"]:
                return
            source = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                continue
            if not line.strip():
                continue
            yield (
                parse_json_line(line, source=source)
                if jsonl
                else Record(
                    id=source, raw_id=source, text=line, fields={"text": line}, source=source
                )
            )


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
        import torch

        from .batch_pipeline import config_hash, load_pipeline, prepare_for_run, set_cache
        from .records import pipeline_extensions

        torch.set_num_threads(threads)  # cores are the actor's share, not the node's
        self.nlp = load_pipeline(Path(config), overrides=overrides)
        self.config_hash = config_hash(self.nlp)
        set_cache(self.nlp, path=Path(cache) if cache else None)
        self.extensions = pipeline_extensions(self.nlp)
        prepare_for_run(self.nlp)
        self.jsonl, self.docbin, self.print_docs = jsonl, docbin, print_docs

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        records = [self._record(row) for row in batch.to_dict("records")]
        docs = [(self._doc(rec), rec) for rec in records]
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

    def _doc(self, rec: Record) -> Doc:
        doc = rec.doc if rec.doc is not None else self.nlp.make_doc(rec.text)
        doc.user_data[ID_KEY] = rec.raw_id
        return doc

    def _result(self, doc: Doc, rec: Record) -> Dict[str, Any]:
        from .batch_pipeline import ERROR_KEY, STATS_KEY
        from .records import doc_record, format_doc

        stats = doc.user_data.pop(STATS_KEY, None) or [0, 0, 0]
        error = doc.user_data.pop(ERROR_KEY, None)
        result: Dict[str, Any] = {
            "id": rec.id,
            "raw_id": json.dumps(rec.raw_id),
            "source": rec.source,
            "error": str(error)[:2000] if error is not None else "",
            "stats": json.dumps(list(stats)),
            "config_hash": self.config_hash,
            "record": "",
            "doc": b"",
            "printed": "",
        }
        if error is not None:
            return result
        if self.jsonl:
            record = doc_record(doc, rec, extensions=self.extensions)
            result["record"] = json.dumps(record, ensure_ascii=False)
        if self.docbin:
            result["doc"] = docbin_bytes(doc, rec)
        if self.print_docs:
            result["printed"] = format_doc(doc, rec, extensions=self.extensions)
        return result


RESULT_COLUMNS = [
    "id", "raw_id", "source", "error", "stats", "config_hash", "record", "doc", "printed"
]  # fmt: skip


def docbin_bytes(doc: Doc, rec: Record) -> bytes:
    """What the local command puts in a DocBin: the doc with its id and input fields."""
    fields = {k: v for k, v in rec.fields.items() if k != "text"}
    if fields:
        doc.user_data[FIELDS_KEY] = fields
    for key in PRIVATE_KEYS:
        doc.user_data.pop(key, None)
    return bytes(doc.to_bytes())


def run_cli(opts: AnnotateOptions, ray_opts: RayOptions) -> int:
    """The hook ``cli/annotate.py`` calls for ``--ray``: prints like the local command and
    returns its exit codes."""
    from .cli.annotate import _run

    return _run(opts, lambda o: annotate_ray(o, ray_opts), "annotate --ray")
