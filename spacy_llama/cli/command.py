"""What the commands' modules share: a parser described by the module's docstring, config
overrides (``--section.key value``, as ``spacy train`` takes them), the run around the work
(an override spaCy rejects is a usage error; ``--quiet`` silences warnings), and the
argument types."""

from __future__ import annotations

import argparse
import warnings
from typing import Any, Callable, Dict

from .exit_codes import EXIT_USAGE
from .overrides import parse_overrides


def add_command(subparsers: Any, name: str, *, help: str, doc: str) -> argparse.ArgumentParser:
    """A command's parser; ``doc`` (the module's docstring) is shown as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def takes_overrides(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], *, hint: str = ""
) -> None:
    """``run`` is the command; unknown ``--section.key value`` arguments are config overrides
    (cli/__init__.py lets them through); ``hint`` follows the message of an interrupted run."""
    parser.set_defaults(func=run, accepts_overrides=True, interrupted_hint=hint)


def run_with_overrides(
    args: argparse.Namespace, work: Callable[[Dict[str, Any]], int]
) -> int:
    """``work(overrides)`` with warnings silenced under ``--quiet``; the usage exit code when
    spaCy rejected an override (it has printed why)."""
    overrides = parse_overrides(args)
    if overrides is None:
        return EXIT_USAGE
    with warnings.catch_warnings():
        if getattr(args, "quiet", False):
            warnings.simplefilter("ignore")
        return work(overrides)


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
