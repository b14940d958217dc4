"""scripts/fill_configs.py puts each comment of a config back in front of the section or
setting it stood before, in the text ``spacy init fill-config`` writes (which drops them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    path = ROOT / "scripts" / "fill_configs.py"
    spec = importlib.util.spec_from_file_location("fill_configs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ORIGINAL = """# The header
# of the file.

[nlp]
lang = "en"

# about the component
[components.llama]
# the batch
batch_size = 8

# Few-shot: uncomment
# [components.llama.task.examples]
"""

FILLED = """[nlp]
lang = "en"
batch_size = 1000

[components]

[components.llama]
factory = "llama"
batch_size = 8
quantize = null
"""


def test_comments_return_to_their_sections_and_settings() -> None:
    text = _script().with_comments(FILLED, ORIGINAL)
    assert text == (
        "# The header\n# of the file.\n\n"
        '[nlp]\nlang = "en"\nbatch_size = 1000\n\n[components]\n\n'
        "# about the component\n[components.llama]\n"
        'factory = "llama"\n# the batch\nbatch_size = 8\nquantize = null\n\n'
        "# Few-shot: uncomment\n# [components.llama.task.examples]\n"
    )


def test_filling_a_filled_text_changes_nothing() -> None:
    module = _script()
    once = module.with_comments(FILLED, ORIGINAL)
    assert module.with_comments(FILLED, once) == once


def test_the_shipped_configs_are_filled(smollm2) -> None:
    """Every configs/*.cfg is what the script makes of it: edited (or merged) configs are
    filled again with `python scripts/fill_configs.py`."""
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert _script().main(["--check"]) == 0
    finally:
        os.chdir(cwd)
