"""Every registered name resolves in a fresh interpreter that never imported spacy_llama."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from importlib.metadata import entry_points
assert "spacy_llama" not in sys.modules
import spacy
from spacy.util import registry

# add_pipe finds the factory through the spacy_factories entry point; its import creates
# the llama_* registries that the component's config then resolves against.
nlp = spacy.blank("en")
pipe = nlp.add_pipe("llama", config={
    "model": {"@llama_models": "spacy-llama.HF.v1", "path": sys.argv[1], "device": "cpu"},
    "task": {"@llama_tasks": "spacy-llama.Completion.v1", "template": "{{ text }}", "chat": False},
    "generation": {"max_new_tokens": 2},
})
doc = nlp("hello")
out = {"llama_factory": repr(registry.factories.get("llama")), "n": len(doc._.llama_logprobs)}
groups = ["spacy_llama_models", "spacy_llama_tasks", "spacy_llama_caches", "spacy_llama_readers",
          "spacy_scorers", "spacy_misc"]
for group in groups:
    for ep in entry_points(group=group):
        if not ep.value.startswith("spacy_llama"):
            continue
        reg_name = group[len("spacy_"):]
        func = registry.get(reg_name, ep.name)
        assert callable(func), ep
        out.setdefault(group, []).append(ep.name)
out["factories"] = sorted(ep.name for ep in entry_points(group="spacy_factories")
                          if ep.value.startswith("spacy_llama"))
print(json.dumps(out))
"""


def test_entry_points_resolve_in_fresh_interpreter(tiny_hf):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_hf)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["factories"] == ["llama"]
    assert "make_llama" in out["llama_factory"]
    assert out["n"] == 2
    assert {"spacy-llama.HF.v1", "spacy-llama.GGUF.v1", "spacy-llama.SmolLM2.v1"} <= set(
        out["spacy_llama_models"]
    )
    assert "spacy-llama.Completion.v1" in out["spacy_llama_tasks"]
    assert out["spacy_llama_readers"] == ["spacy-llama.FewShotReader.v1"]
    assert out["spacy_scorers"] == ["spacy-llama.task_scorer.v1"]
    assert out["spacy_misc"] == ["spacy-llama.sourced_lookups.v1"]


def test_setup_cfg_entry_points_match_decorators():
    """Each name in setup.cfg is what its function's decorator registers."""
    import configparser

    from spacy.util import registry

    import spacy_llama  # noqa: F401
    import spacy_llama.features.model  # noqa: F401  (heavy: not imported by spacy_llama)

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    eps = cfg["options.entry_points"]
    ours = ("models", "tasks", "caches", "readers")
    groups = ("spacy_scorers", "spacy_architectures", "spacy_misc")
    for group in (*(f"spacy_llama_{g}" for g in ours), *groups):
        for line in filter(None, eps.get(group, "").splitlines()):
            name, target = (s.strip() for s in line.split("="))
            module, attr = target.split(":")
            mod = __import__(module, fromlist=[attr])
            reg = getattr(registry, group[len("spacy_") :])
            assert reg.get(name) is getattr(mod, attr), name
