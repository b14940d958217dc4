"""``python -m spacy_llama <command>``.

Each command lives in its own module ``spacy_llama/cli/<command>.py`` that defines
``register(subparsers)``: it adds its parser and sets ``func`` (called with the parsed args,
returns an exit code). Commands only parse arguments and print; the work is done by the
package's rooms (``batch/``, ``models/``). Turning errors into one message and an exit code
happens here, once: every :class:`~spacy_llama.errors.SpacyLlamaError` becomes
``[spacy-llama] <command>: error: <message>`` and the command's ``error_exit`` code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import SpacyLlamaError
from .exit_codes import EXIT_INTERRUPTED, EXIT_USAGE

COMMANDS = ("annotate", "merge", "convert", "evaluate", "distill", "from_spacy_llm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spacy_llama")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides_argv = extra
    try:
        return int(args.func(args) or 0)
    except SpacyLlamaError as e:
        print(f"[spacy-llama] {args.command}: error: {e}", file=sys.stderr)
        return int(getattr(args, "error_exit", EXIT_USAGE))
    except KeyboardInterrupt:
        hint = getattr(args, "interrupted_hint", "")
        print(f"[spacy-llama] {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
