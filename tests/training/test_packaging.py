"""``spacy package`` of a trained pipeline: the sdist holds the adapter files, and the
installed package loads with the adapters applied (the trained predictions, not the base
model's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from thinc.api import SGD

from .builders import TEXTS, adapter_block, cat_examples, textcat_nlp

ROOT = Path(__file__).resolve().parents[2]
LOAD = """
import json, sys, spacy
nlp = spacy.load("en_x")
print(json.dumps([nlp(t).cats for t in json.loads(sys.argv[1])]))
"""


def _run(args, **env: str) -> str:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([*env.values(), str(ROOT)])}
    done = subprocess.run(args, env=full, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_package_includes_and_applies_the_adapters(tiny_hf, tmp_path) -> None:
    torch.manual_seed(0)
    nlp = textcat_nlp(tiny_hf, adapter=adapter_block())
    opt = SGD(0.1, L2=0.0, grad_clip=0.0)
    for _ in range(3):
        nlp.update(cat_examples(nlp), sgd=opt)
    want = [nlp(t).cats for t in TEXTS]
    nlp.to_disk(tmp_path / "pipe")
    (tmp_path / "out").mkdir()
    py = sys.executable
    _run([py, "-m", "spacy", "package", str(tmp_path / "pipe"), str(tmp_path / "out"),
          "--name", "x", "--version", "0.0.1", "--build", "sdist"])  # fmt: skip
    sdist = tmp_path / "out" / "en_x-0.0.1" / "dist" / "en_x-0.0.1.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to("en_x-0.0.1/en_x/en_x-0.0.1").as_posix()
                 for n in tar.getnames() if "/en_x-0.0.1/llama/" in n}  # fmt: skip
    assert {"llama/adapter/adapter_model.safetensors", "llama/adapter/adapter_config.json"} <= names
    site = tmp_path / "site"
    _run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
          "--target", str(site), str(sdist)])  # fmt: skip
    got = json.loads(_run([py, "-c", LOAD, json.dumps(TEXTS)], site=str(site)))
    assert got == want
    untrained = textcat_nlp(tiny_hf, adapter=adapter_block())
    assert [untrained(t).cats for t in TEXTS] != got
