"""``--section.key value`` config overrides, as ``spacy train`` and ``spacy assemble`` take them."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional


def parse_overrides(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The overrides left over by argparse; None when spaCy rejected one (it has printed why)."""
    from spacy.cli._util import parse_config_overrides

    try:
        return dict(parse_config_overrides(list(getattr(args, "overrides_argv", []))))
    except SystemExit:
        return None
