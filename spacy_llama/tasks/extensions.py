"""The ``doc._``/``span._``/``token._`` attributes tasks write: named in the config,
installed once, re-installing the same name a no-op."""

from __future__ import annotations

from typing import Iterable

from spacy.tokens import Doc, Span, Token

from ..errors import Errors, FewShotError


def install_extensions(
    *, doc: Iterable[str] = (), span: Iterable[str] = (), token: Iterable[str] = ()
) -> None:
    """Install extensions once (default None); re-installing the same name is a no-op."""
    for cls, names in ((Doc, doc), (Span, span), (Token, token)):
        for name in names:
            if not cls.has_extension(name):
                cls.set_extension(name, default=None)


def check_names(**names: str) -> None:
    """Extension names come from the config: they must be distinct, non-empty identifiers."""
    values = list(names.values())
    bad = [k for k, v in names.items() if not v or not v.isidentifier()]
    if bad or len(set(values)) != len(values):
        raise FewShotError(Errors.E315.format(names=names))
