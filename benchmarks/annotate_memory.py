"""Does ``annotate`` run in flat memory? Annotate 20,000 short docs with a tiny random
LLaMA model and report the process's peak RSS after 2,000 docs and at the end.

    python benchmarks/annotate_memory.py [--docs 20000] [--checkpoint 2000]

The annotate command runs as a child process; its peak RSS (VmHWM) is read from /proc
while the output grows, and from ``getrusage(RUSAGE_CHILDREN)`` once it exits. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CITIES = ["London", "Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon"]


def write_inputs(folder: Path, *, docs: int, batch_size: int, max_new_tokens: int) -> Path:
    from tests.fixtures.helpers import write_config
    from tests.fixtures.tiny import make_tiny_hf

    config = write_config(
        folder, make_tiny_hf(folder / "tiny"), batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    with (folder / "in.jsonl").open("w", encoding="utf-8") as f:
        for i in range(docs):
            city = CITIES[i % len(CITIES)]
            f.write(json.dumps({"id": f"d{i}", "text": f"Report {i}: a big day in {city}."}) + "\n")
    return config


def peak_rss_kib(pid: int) -> Optional[int]:
    """VmHWM (peak resident set) of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def count_lines(path: Path, state: Dict[str, int]) -> int:
    """Lines in a growing file, reading only what was appended since the last call."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(state.get("offset", 0))
        chunk = f.read()
    state["offset"] = state.get("offset", 0) + len(chunk)
    state["lines"] = state.get("lines", 0) + chunk.count(b"\n")
    return state["lines"]


def run(folder: Path, config: Path, *, checkpoint: int, batch_size: int) -> Dict[str, float]:
    out = folder / "out.jsonl"
    cmd = [sys.executable, "-m", "spacy_llama", "annotate", str(config), str(folder / "in.jsonl"),
           str(out), "--quiet", "--batch-size", str(batch_size), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    at_checkpoint: Optional[int] = None
    state: Dict[str, int] = {}
    while proc.poll() is None:
        if at_checkpoint is None and count_lines(out, state) >= checkpoint:
            at_checkpoint = peak_rss_kib(proc.pid)
        time.sleep(0.05)
    # poll() reaped the child; wait4 would come too late, so read the kernel's maximum
    # over children instead (this process has no other children).
    import resource

    end_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "returncode": float(proc.returncode),
        "seconds": time.perf_counter() - start,
        "docs": float(count_lines(out, state)),
        "rss_checkpoint_mib": (at_checkpoint or 0) / 1024,
        "rss_end_mib": end_kib / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--checkpoint", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="annotate_memory_") as tmp:
        folder = Path(tmp)
        config = write_inputs(folder, docs=args.docs, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens)
        r = run(folder, config, checkpoint=args.checkpoint, batch_size=args.batch_size)
    growth = r["rss_end_mib"] - r["rss_checkpoint_mib"]
    print(f"annotated {int(r['docs'])} docs in {r['seconds']:.0f}s "
          f"({r['docs'] / r['seconds']:.0f} docs/s), exit code {int(r['returncode'])}")
    print(f"peak RSS after {args.checkpoint:,} docs: {r['rss_checkpoint_mib']:.1f} MiB")
    print(f"peak RSS after {int(r['docs']):,} docs: {r['rss_end_mib']:.1f} MiB")
    print(f"growth: {growth:+.1f} MiB ({100 * growth / max(r['rss_checkpoint_mib'], 1e-9):+.1f}%)")
    return 0 if r["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
