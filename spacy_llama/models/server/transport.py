"""The transport: JSON over HTTP with bounded time and size, retries with backoff, and the
circuit breaker (``breaker.py``) around every attempt.

* ``timeout`` is a deadline for a whole attempt (connecting, waiting and reading the body,
  however slowly it arrives), ``deadline`` for a whole request (all attempts and waits);
  a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER` opens the breaker instead of being
  waited for;
* a completion's body may hold at most ``max_answer_bytes`` (``openai.py``), any other body
  :data:`MAX_BODY_BYTES`;
* 429, 5xx, timeouts and connection errors (one cut off mid-answer too) are retried with
  exponential backoff and jitter, honouring ``Retry-After``.

The API key is read from the environment variable named by ``api_key_env`` at each request;
it is never stored.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, List, Optional

from ...errors import Errors
from .breaker import BreakerOpen, CircuitBreaker

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds; a server asking for longer is treated as down
MAX_BODY_BYTES = 64 << 20  # any answer but a completion's (model lists, token ids...)
DEFAULT_DEADLINE = 600.0  # seconds for one request, all attempts and waits included


class ServerError(RuntimeError):
    """One HTTP exchange failed; ``retry`` says whether trying again may help, ``answered``
    whether the server sent an answer at all (a timeout or a refused connection did not)."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool,
        retry_after: Optional[float] = None,
        answered: bool = True,
    ):
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after
        self.answered = answered


# -- HTTP -----------------------------------------------------------------------------------
@dataclass
class HttpClient:
    """Small JSON-over-HTTP client on the standard library (no extra dependency)."""

    base_url: str  # the API root, e.g. http://host:8000/v1
    timeout: float
    api_key_env: Optional[str] = None

    @property
    def root(self) -> str:
        """The server root (where llama.cpp and vLLM put /tokenize)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def get(self, path: str, *, at_root: bool = False, timeout: Optional[float] = None) -> Any:
        base = self.root if at_root else self.base_url.rstrip("/")
        return self._send("GET", base + path, None, timeout)

    def post(
        self,
        path: str,
        body: Dict[str, Any],
        *,
        at_root: bool = False,
        timeout: Optional[float] = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Any:
        base = self.root if at_root else self.base_url.rstrip("/")
        return self._send("POST", base + path, body, timeout, max_bytes=max_bytes)

    def _headers(self) -> Dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _send(
        self,
        method: str,
        url: str,
        body: Optional[dict],
        timeout: Optional[float],
        *,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit  # for the whole attempt, not per socket read
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                raw = read_body(resp, deadline=deadline, max_bytes=max_bytes, url=url)
        except urllib.error.HTTPError as e:
            raise http_error(url, e) from None
        except http.client.HTTPException as e:  # IncompleteRead, a bad status line
            cut = f"{type(e).__name__}: {e}"
            raise ServerError(
                Errors.E608.format(method=method, url=url, reason=cut),
                retry=True,
                answered=False,
            ) from None
        except (urllib.error.URLError, OSError) as e:  # refused, reset, DNS, timeout
            reason = getattr(e, "reason", e)
            kind = "timed out" if isinstance(reason, TimeoutError) else "failed"
            raise ServerError(
                Errors.E121.format(method=method, url=url, kind=kind, reason=reason),
                retry=True,
                answered=False,
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(
                Errors.E120.format(method=method, url=url, raw=repr(raw[:200])), retry=False
            ) from None


def read_body(resp: Any, *, deadline: float, max_bytes: int, url: str) -> bytes:
    """The body, read until ``deadline`` at the latest (a server that sends a byte now and
    then would defeat a per-read timeout) and never beyond ``max_bytes``."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _too_large(url, max_bytes)
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    chunks: List[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the answer took longer than the timeout ({total} bytes read)")
        if sock is not None:
            sock.settimeout(left)  # the next read may not outlast the attempt either
        try:
            chunk = resp.read1(1 << 16)
        except TimeoutError:
            raise TimeoutError(
                f"the answer took longer than the timeout ({total} bytes read)"
            ) from None
        if not chunk:
            if length is not None and length.isdigit() and total < int(length):
                # read1 ends quietly where read() would raise: the connection was cut
                raise http.client.IncompleteRead(b"".join(chunks), int(length) - total)
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(url, max_bytes)
        chunks.append(chunk)


def _too_large(url: str, max_bytes: int) -> ServerError:
    max_new = max(0, (max_bytes - (64 << 10)) // 4096)
    return ServerError(Errors.E610.format(url=url, limit=max_bytes, max_new=max_new), retry=False)


def http_error(url: str, error: urllib.error.HTTPError) -> ServerError:
    try:
        detail = error.read().decode("utf-8", "replace")[:500]
    except OSError:
        detail = ""
    return ServerError(
        Errors.E122.format(url=url, code=error.code, detail=detail or error.reason),
        retry=error.code in RETRY_STATUSES,
        retry_after=parse_retry_after(error.headers.get("Retry-After")),
    )


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- retries --------------------------------------------------------------------------------
@dataclass
class RetryPolicy:
    max_retries: int
    backoff: float  # the first delay (seconds); doubles with every retry
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        # "Equal jitter": never zero, and clients that failed together spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def call_with_retries(
    send: Callable[[float], Any],
    breaker: CircuitBreaker,
    *,
    retry: RetryPolicy,
    deadline: float,
    timeout: float,
    url: str,
    what: str = "request",
) -> Any:
    """Run ``send`` (given the attempt's timeout) with retries while ``breaker`` lets
    attempts through and the request's ``deadline`` allows; raise the last ServerError
    when they run out."""
    attempts = retry.max_retries + 1
    end = time.monotonic() + deadline
    for attempt in range(attempts):
        left = end - time.monotonic()
        try:
            if left <= 0:
                error = Errors.E609.format(
                    what=what, deadline=deadline, error="no time left for an attempt"
                )
                raise ServerError(error, retry=False)
            limit = min(timeout, left)
            return _attempt(lambda: send(limit), breaker, url)  # noqa: B023
        except ServerError as e:
            if e.retry_after is not None and e.retry_after > MAX_RETRY_AFTER:
                message = Errors.E612.format(url=url, seconds=e.retry_after, cap=MAX_RETRY_AFTER)
                breaker.hold(message)
                raise ServerError(message, retry=False) from None
            if not e.retry:
                raise
            if attempt + 1 >= attempts:
                raise ServerError(
                    Errors.E123.format(error=e, attempts=attempts), retry=False
                ) from None
            delay = retry.delay(attempt, e.retry_after)
            if time.monotonic() + delay >= end:
                error = Errors.E609.format(what=what, deadline=deadline, error=e)
                raise ServerError(error, retry=False) from None
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _attempt(send: Callable[[], Any], breaker: CircuitBreaker, url: str) -> Any:
    """One attempt, if the breaker admits it; its outcome is reported to the breaker."""
    admitted = breaker.admit()
    if isinstance(admitted, BreakerOpen):
        raise ServerError(_open_message(admitted, url), retry=False)
    try:
        result = send()
    except ServerError as e:
        breaker.failed(str(e), answered=e.answered, probe=admitted)
        raise
    except BaseException as e:  # never leave a probe out forever
        breaker.failed(repr(e), answered=True, probe=admitted)
        raise
    breaker.succeeded()
    return result


def _open_message(state: BreakerOpen, url: str) -> str:
    return Errors.E141.format(
        kind=state.kind, url=url, failures=state.failures, last=state.last,
        cooldown=state.cooldown,
    )  # fmt: skip
