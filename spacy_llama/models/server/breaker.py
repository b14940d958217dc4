"""A circuit breaker for one kind of server call (completions, or tokenize/detokenize).

Retries with backoff suit a server that hiccups; they do not suit a server that hangs. Every
request would then wait ``timeout`` once per attempt, and annotate retries a failed batch doc
by doc, so each document would pay all its retries twice. The breaker counts attempts that
failed without an answer (timeout, refused, reset) in a row. After ``threshold`` of them it
*opens*: attempts are refused on the spot (no request is sent) for ``cooldown`` seconds.
Then one attempt, the probe, is let through; while it is out, the others are still refused.
Only a successful call of the guarded kind closes the breaker (a /tokenize that answers says
nothing about completions that hang); a failed probe opens it for another cool-down.

A server that asks to be left alone for longer than the client waits (a ``Retry-After``
beyond its cap) opens the breaker at once (:meth:`CircuitBreaker.hold`).

So a hung server receives at most ``threshold + max_concurrency - 1`` attempts before the
breaker opens (the failures that open it, plus the attempts already in flight), and then at
most one attempt per cool-down.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union


@dataclass
class BreakerOpen:
    """Why an attempt was refused: the count and last error that opened the breaker."""

    kind: str
    failures: int
    last: str
    cooldown: float


@dataclass
class CircuitBreaker:
    threshold: int  # failures without an answer, in a row, that open the breaker
    cooldown: float  # seconds to refuse attempts before one probe is let through
    kind: str = "completion"  # what it guards, for messages
    clock: Callable[[], float] = time.monotonic
    _failures: int = 0
    _last: str = ""
    _opened_at: Optional[float] = None
    _probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def admit(self) -> Union[bool, BreakerOpen]:
        """Before an attempt: ``False`` to send it, ``True`` to send it as the probe, or a
        :class:`BreakerOpen` to refuse it."""
        with self._lock:
            if self._opened_at is None:
                return False
            if self._probing or self.clock() - self._opened_at < self.cooldown:
                return BreakerOpen(self.kind, self._failures, self._last, self.cooldown)
            self._probing = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._probing = 0, None, False

    def failed(self, error: str, *, answered: bool, probe: bool) -> None:
        """After a failed attempt. ``answered``: the server sent an answer (an HTTP error,
        a malformed body), which neither counts towards opening nor closes the breaker."""
        with self._lock:
            if not answered:
                self._failures += 1
                self._last = error
            if probe:  # the probe failed: wait another cool-down before the next one
                self._probing = False
                self._opened_at = self.clock()
            elif not answered and self._opened_at is None and self._failures >= self.threshold:
                self._opened_at = self.clock()

    def hold(self, error: str) -> None:
        """Open now: the server asked for a pause longer than any retry may wait."""
        with self._lock:
            self._failures = max(self._failures, self.threshold)
            self._last = error
            self._probing = False
            self._opened_at = self.clock()
