"""Assemble a training config untrained, with the labels a trained pipeline learned:
``python scripts/assemble_zero_shot.py CONFIG TRAINED OUTPUT``.

``configs/train_textcat.cfg`` takes its labels from the training data (``labels = []``), so
the untrained (zero-shot) pipeline the project compares with has no data to take them from.
It gets the trained pipeline's labels (its meta.json lists them), and the config's
verbalizers and definitions of those labels, and is otherwise the same config, assembled by
``spacy assemble``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    config, trained, output = (sys.argv[1:] if argv is None else argv)[:3]
    meta = json.loads((Path(trained) / "meta.json").read_text(encoding="utf8"))
    labels = meta.get("labels", {}).get("llama") or []
    if not labels:
        print(f"[spacy-llama] {trained}/meta.json lists no labels for 'llama'.", file=sys.stderr)
        return 1
    from spacy.util import load_config

    cfg = load_config(config, interpolate=False)
    task = cfg["components"]["llama"]["task"]
    task["labels"] = list(labels)
    for key in ("verbalizers", "label_definitions"):  # optional: those of these labels only
        if isinstance(task.get(key), dict):
            task[key] = {k: v for k, v in task[key].items() if k in labels}
    with tempfile.TemporaryDirectory() as tmp:
        filled = Path(tmp) / "zero_shot.cfg"
        cfg.to_disk(filled)
        cmd = [sys.executable, "-m", "spacy", "assemble", str(filled), output]
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
