"""A real OpenAI-compatible server for the tests: llama-cpp-python's, serving the SmolLM2
GGUF on 127.0.0.1 at a free port. One server is shared by the whole test session; tests
that kill a server start their own with :class:`LlamaServer`.

Import the fixture into a test module: ``from .llama_server import llama_server_fixture``
(it is named ``llama_server`` in test signatures).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Iterator, List, Optional

import pytest

INSTALL_HINT = "run `make install-test` (or pip install -e '.[server]')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gguf_path() -> Path:
    from spacy_llama.models.default import smollm2_gguf_path

    return smollm2_gguf_path()


class LlamaServer:
    """``python -m llama_cpp.server`` in a child process; ``start``/``kill`` may repeat."""

    def __init__(self, model: Path, *, port: Optional[int] = None, log: Path) -> None:
        self.model = model
        self.port = port or free_port()
        self.log_path = log
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> List[str]:
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "2048", "--n_threads", "1", "--verbose", "False",
        ]  # fmt: skip

    def start(self, *, wait: float = 120.0) -> LlamaServer:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log_path.read_text()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"llama.cpp server not ready after {wait}s: {self.log_path}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=2) as resp:
                return bool(json.load(resp).get("data"))
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session", name="llama_server")
def llama_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(f"llama-cpp-python[server] is not installed; {INSTALL_HINT}")
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    server = LlamaServer(gguf_path(), log=log).start()
    try:
        yield server
    finally:
        server.kill()
