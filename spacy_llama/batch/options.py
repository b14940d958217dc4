"""What a corpus run is asked to do: the options of ``annotate`` (and of ``--ray``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional


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
    html: Optional[Path] = None  # displaCy views of the run's first documents (views.py)
    part_size: int = 1000

    @property
    def cache_path(self) -> Optional[Path]:
        """The response cache of this run: ``--cache``, else ``OUTPUT.cache.sqlite``."""
        if self.no_cache:
            return None
        return self.cache or self.output.with_name(self.output.name + ".cache.sqlite")


@dataclass
class RayOptions:
    address: Optional[str] = None  # None: start a local cluster (or join the running one)
    workers: int = 2  # actors, each with its own copy of the pipeline
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0  # also the torch threads of each actor
