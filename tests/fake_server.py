"""A tiny scripted OpenAI-compatible HTTP server for the tests the real server cannot do
on demand: slow answers, 429/503 with Retry-After, and counting overlapping requests.

It answers ``GET /v1/models``, ``POST /extras/tokenize`` (one token per word) and
``POST /v1/completions`` (echoes the prompt's last word), after ``delay`` seconds, unless
the next entry of ``script`` says to fail with a status code first.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple


@dataclass
class FakeState:
    delay: float = 0.0  # seconds before a completion is answered
    script: List[Tuple[int, Dict[str, str]]] = field(default_factory=list)  # (status, headers)
    in_flight: int = 0
    max_in_flight: int = 0
    completions: List[float] = field(default_factory=list)  # arrival time of each attempt
    bodies: List[Dict[str, Any]] = field(default_factory=list)
    auth: List[str] = field(default_factory=list)  # Authorization headers received
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeServer:
    """``with FakeServer() as srv:`` serves on 127.0.0.1 at a free port (``srv.url``)."""

    def __init__(self, **state: Any) -> None:
        self.state = FakeState(**state)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: FakeState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return None

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "fake-model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.state.lock:
            self.state.auth.append(self.headers.get("Authorization", ""))
        if self.path == "/extras/tokenize":
            self._json(200, {"tokens": list(range(len(str(body["input"]).split())))})
        elif self.path == "/v1/completions":
            self._complete(body)
        else:
            self._json(404, {"detail": "Not Found"})

    def _complete(self, body: Dict[str, Any]) -> None:
        st = self.state
        with st.lock:
            st.completions.append(time.monotonic())
            st.bodies.append(body)
            scripted: Optional[Tuple[int, Dict[str, str]]] = st.script.pop(0) if st.script else None
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            if scripted is not None:
                self._json(scripted[0], {"error": "scripted failure"}, headers=scripted[1])
                return
            time.sleep(st.delay)
            word = str(body["prompt"]).split()[-1] if str(body["prompt"]).split() else ""
            self._json(200, completion(" " + word, n_tokens=1))
        finally:
            with st.lock:
                st.in_flight -= 1

    def _json(self, status: int, data: Any, headers: Optional[Dict[str, str]] = None) -> None:
        raw = json.dumps(data).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def completion(text: str, *, n_tokens: int) -> Dict[str, Any]:
    return {
        "object": "text_completion",
        "choices": [
            {
                "text": text,
                "index": 0,
                "finish_reason": "length",
                "logprobs": {"tokens": [text], "token_logprobs": [-0.5] * n_tokens},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": n_tokens},
    }
