"""scripts/check_llama_cpp.py: a crash in the child is a failed check, a failed check leads to
one native source build, and the installed llama-cpp-python passes the real check."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "check_llama_cpp", ROOT / "scripts" / "check_llama_cpp.py"
)
assert _spec is not None and _spec.loader is not None
check_llama_cpp: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_llama_cpp)


def test_a_child_killed_by_sigill_fails_the_check() -> None:
    ok, what = check_llama_cpp.run_child("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    assert not ok and "killed by SIGILL" in what and "illegal instruction" in what
    ok, what = check_llama_cpp.run_child("import sys; sys.exit('no llama_cpp')")
    assert not ok and "exit status 1" in what and "no llama_cpp" in what
    assert check_llama_cpp.run_child("print('ok')") == (True, "ok")


class FakePip:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, checks: List[bool]) -> None:
        self.calls: List[List[str]] = []
        self.envs: List[Optional[Dict[str, str]]] = []
        self.checks = list(checks)
        monkeypatch.setattr(check_llama_cpp, "pip_install", self.pip_install)
        monkeypatch.setattr(check_llama_cpp, "check", lambda gguf: self.checks.pop(0))

    def pip_install(self, args: List[str], env: Optional[Dict[str, str]] = None) -> bool:
        self.calls.append(list(args))
        self.envs.append(env)
        return True


def test_a_working_build_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pip = FakePip(monkeypatch, [True])
    assert check_llama_cpp.install("llama-cpp-python==0", tmp_path, tmp_path / "m.gguf") == 0
    assert pip.calls == [["--find-links", str(tmp_path), "llama-cpp-python==0"]]


def test_a_failing_build_is_rebuilt_natively_from_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    pip = FakePip(monkeypatch, [False, True])
    missing = tmp_path / "no_shared_wheels"  # absent: the registry only, no --find-links
    assert check_llama_cpp.install("llama-cpp-python==0", missing, tmp_path / "m.gguf") == 0
    assert pip.calls[0] == ["llama-cpp-python==0"]
    rebuild = pip.calls[1]
    assert rebuild[rebuild.index("--no-binary") + 1] == "llama-cpp-python"
    assert {"--force-reinstall", "--no-cache-dir", "--no-deps"} <= set(rebuild)
    assert pip.envs[1] is not None and pip.envs[1]["CMAKE_ARGS"] == "-DGGML_NATIVE=ON"
    # ... and when the rebuild does not work either, the script says so.
    FakePip(monkeypatch, [False, False])
    assert check_llama_cpp.install("llama-cpp-python==0", missing, tmp_path / "m.gguf") == 1


def test_an_explicit_cmake_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_NATIVE=OFF -DGGML_AVX2=ON")
    assert check_llama_cpp.native_build_env()["CMAKE_ARGS"] == "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"


def test_the_installed_llama_cpp_completes_on_this_cpu() -> None:
    """`make test` installs llama-cpp-python[server]; it must run here, not just import."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed; run `make install-test`")
    assert check_llama_cpp.main([]) == 0
