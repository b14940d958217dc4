"""``python -m spacy_llama from-spacy-llm CONFIG OUT [--model-path PATH] [--overwrite]``

Translates a spacy-llm pipeline config into a spacy-llama one: every ``llm`` /
``llm_<task>`` component becomes a ``llama`` component running the nearest task here
(NER.v2 constrained, TextCat.v2 scored, REL.v1, Summary.v1, Completion.v1), carrying labels,
label definitions and few-shot examples (rewritten next to OUT). A task with no equivalent
stays a spacy-llm component, with spacy-llama.SpacyLLM.v1 as its model. One line per
setting says what was carried, what changed and why, and what has no equivalent. Check the
result with ``python -m spacy assemble OUT PIPELINE``. Exit codes: 0 written, 2 the config
cannot be read or OUT cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import CompatError, Errors
from .command import add_command
from .exit_codes import EXIT_OK


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "from-spacy-llm",
        help="translate a spacy-llm config into a spacy-llama config",
        doc=__doc__ or "",
    )
    p.add_argument("config", type=Path, help="the spacy-llm pipeline config (.cfg)")
    p.add_argument("output", type=Path, help="the spacy-llama config to write (.cfg)")
    p.add_argument(
        "--model-path",
        type=Path,
        help="a local model for the new components: a Hugging Face folder or a .gguf file "
        "(default: the embedded SmolLM2)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..llm_compat.translate import read_config, translate, write_translation

    out: Path = args.output
    if out.suffix != ".cfg":
        raise CompatError(Errors.E753.format(path=out))
    if out.exists() and not args.overwrite:
        raise CompatError(Errors.E752.format(path=out))
    config = read_config(args.config)
    result = translate(config, source=args.config, out=out, model_path=args.model_path)
    write_translation(result, out)
    for note in result.notes:
        print(note.line())
    for file in result.example_files:
        print(f"wrote few-shot examples {file}")
    left = len(result.unmapped)
    print(
        f"[spacy-llama] from-spacy-llm: wrote {out} ({len(result.notes)} settings: "
        f"{left} without an equivalent here). Check it: python -m spacy assemble {out} "
        "PIPELINE_FOLDER",
        file=sys.stderr,
    )
    return EXIT_OK
