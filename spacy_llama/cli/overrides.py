"""``--section.key value`` config overrides, as ``spacy train`` and ``spacy assemble`` take them."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from ..errors import Errors, UsageError


def parse_overrides(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The overrides left over by argparse; None when spaCy rejected one (it has printed why).
    An override without a value is a usage error (UsageError): spaCy reads it as ``true``,
    and ``--...max_new_tokens`` with its number forgotten would then generate one token."""
    from spacy.cli._util import parse_config_overrides

    argv = list(getattr(args, "overrides_argv", []))
    check_values(argv)
    try:
        return dict(parse_config_overrides(argv))
    except SystemExit:
        return None


def check_values(argv: List[str]) -> None:
    """Every ``--section.key`` is followed by a value (or written ``--section.key=value``)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("--") or "=" in arg:
            continue
        following = argv[i + 1] if i + 1 < len(argv) else None
        if following is None or following.startswith("--"):
            shown = "missing" if following is None else repr(following)
            raise UsageError(Errors.E802.format(option=arg, next=shown))
