"""``spacy-llama.SQLiteCache.v1``: a response cache in one SQLite file, shared by processes.

Keys come from the engine (they already hash the model, every generation parameter and the
prompt), values are JSON. The file is opened in WAL mode with a busy timeout, so several
annotate workers can read and write it at once; writes that still meet a lock are retried.
A cache must never stop a run: a corrupt or unreadable file is moved aside and rebuilt with
a warning, and if even that fails the cache turns itself off for this process.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TypeVar, Union

from ..registry import llama_caches

T = TypeVar("T")

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_CHUNK = 500  # SQLite limits the number of ``?`` parameters per statement


class SQLiteCache:
    """A ``get_many``/``put_many`` store (see ``generation.engine.ResponseCache``)."""

    def __init__(self, path: Union[str, Path], *, timeout: float = 30.0, retries: int = 8) -> None:
        self.path = Path(path).expanduser()
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.enabled = True
        self._conn: Optional[sqlite3.Connection] = None
        self._pid: Optional[int] = None

    # A connection must not cross a fork or a pickle: each process opens its own.
    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_conn": None, "_pid": None}

    def __repr__(self) -> str:
        return f"SQLiteCache({str(self.path)!r})"

    # -- the protocol -------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]:
        found: Dict[str, dict] = {}
        for chunk in _chunks(list(keys), _CHUNK):
            rows: List[Any] = self._guarded(partial(self._select, chunk), default=[])
            for key, value in rows:
                try:
                    found[key] = json.loads(value)
                except ValueError:
                    continue  # an unreadable value is a miss; the new result replaces it
        return found

    def put_many(self, items: Dict[str, dict]) -> None:
        rows = [(key, json.dumps(value)) for key, value in items.items()]
        if rows:
            self._guarded(lambda: self._insert(rows), default=None)

    def __len__(self) -> int:
        return int(
            self._guarded(
                lambda: self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0],
                default=0,
            )
        )

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- SQL ------------------------------------------------------------------------
    def _select(self, keys: List[str]) -> List[Any]:
        marks = ",".join("?" * len(keys))
        sql = f"SELECT key, value FROM responses WHERE key IN ({marks})"
        return self._connect().execute(sql, keys).fetchall()

    def _insert(self, rows: List[Any]) -> None:
        conn = self._connect()
        with conn:  # one transaction: a batch is stored whole or not at all
            conn.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self.timeout)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL keeps it consistent
                conn.execute(_SCHEMA)
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    # -- failure handling ----------------------------------------------------------
    def _guarded(self, op: Callable[[], T], *, default: T) -> T:
        """Run ``op``, waiting out locks and rebuilding a corrupt file; never raise."""
        if not self.enabled:
            return default
        rebuilt = False
        for attempt in range(self.retries):
            try:
                return op()
            except sqlite3.OperationalError as e:
                if _is_lock(e):
                    time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
                    continue
                # Disk full, no permission...: the file may be fine, so never move it aside.
                self._disable(e)
                return default
            except OSError as e:  # the folder cannot be created
                self._disable(e)
                return default
            except sqlite3.DatabaseError as e:  # "file is not a database", malformed pages
                if rebuilt:
                    self._disable(e)
                    return default
                self._rebuild(e)
                rebuilt = True
        warnings.warn(
            f"[spacy-llama] The cache {self.path} stayed locked; skipped one access.", stacklevel=3
        )
        return default

    def _rebuild(self, error: Exception) -> None:
        self.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}")
        warnings.warn(
            f"[spacy-llama] The cache file {self.path} is unusable ({error}); it was moved to "
            f"{aside.name} and a new, empty cache was started.",
            stacklevel=3,
        )
        for suffix in ("-wal", "-shm"):  # a stale log must not be replayed into the new file
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                _quiet_unlink(side)
        if self.path.exists():
            try:
                os.replace(self.path, aside)
            except OSError:
                _quiet_unlink(self.path)

    def _disable(self, error: Exception) -> None:
        warnings.warn(
            f"[spacy-llama] Cache {self.path} turned off for this run: {error}", stacklevel=4
        )
        self.enabled = False
        self.close()


def _is_lock(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _quiet_unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _chunks(items: List[str], size: int) -> Iterator[List[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@llama_caches("spacy-llama.SQLiteCache.v1")
def sqlite_cache_v1(
    path: Union[str, Path] = ".cache/spacy_llama/responses.sqlite",
    *,
    timeout: float = 30.0,
    retries: int = 8,
) -> SQLiteCache:
    """Cache generations in a SQLite file; safe to share between processes."""
    return SQLiteCache(path, timeout=timeout, retries=retries)
