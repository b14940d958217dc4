"""benchmarks/grammar_engines.py on SmolLM2's vocabulary: llguidance (the dependency) is
measured through the engine's own grammar module, every installed engine once per repeat,
with positive times; engines that are not installed are not measured."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_grammar_engines_benchmark_measures_the_installed_engines(smollm2, capsys, monkeypatch):
    from benchmarks import grammar_engines

    walks: List[Dict[str, float]] = []
    walk = grammar_engines.walk

    def walk_spy(*args: Any) -> Dict[str, float]:
        walks.append(walk(*args))
        return walks[-1]

    monkeypatch.setattr(grammar_engines, "walk", walk_spy)
    assert grammar_engines.main(["--repeat", "1", "--rows", "4"]) == 0
    installed = [
        name for name, (module, _) in grammar_engines.ENGINES.items()
        if importlib.util.find_spec(module) is not None
    ]  # fmt: skip
    assert "llguidance" in installed and len(walks) == len(installed)
    assert all(w["fill1"] > 0 and w["filln"] > 0 and w["accept"] > 0 for w in walks)
    measured = {}
    for line in capsys.readouterr().out.splitlines():
        name, *cols = line[:14].strip(), *line[14:].split()
        if name in grammar_engines.ENGINES and len(cols) == 5:
            measured[name] = [float(x) for x in cols]
    assert sorted(measured) == sorted(installed)
    assert all(x > 0 for x in measured["llguidance"][2:])  # mask b=1, mask b=rows, accept
