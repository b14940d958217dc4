"""Time and size budgets for rendering Jinja templates, which may come from files a user
does not control: a chat template inside a downloaded GGUF or ``tokenizer_config.json``,
a shared prompt template. Without them a template with a 10^10-iteration loop hangs the
pipeline build, and one that computes ``'x' * 10**10`` allocates gigabytes.

* time: while a template renders, a trace function on the template's own frames (and only
  those) stops it past :data:`TEMPLATE_SECONDS`;
* size: :class:`BudgetedSandbox` refuses ``*``, ``+`` and ``**`` whose result would exceed
  :data:`TEMPLATE_CHARS` items (or digits) before computing them, and :func:`render_budgeted`
  stops an output growing beyond it, piece by piece.

Both raise :class:`BudgetExceeded`; callers turn it into a coded error naming the template.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Collection, Iterator, Optional

from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from .errors import BudgetExceeded

TEMPLATE_SECONDS = 10.0  # to render one prompt; real templates take milliseconds
TEMPLATE_CHARS = 16_000_000  # characters of one rendering (and items of a value in it)
TEMPLATE_FILES = frozenset({"<template>"})  # the file name Jinja gives templates from strings


@contextmanager
def time_budget(
    seconds: float = TEMPLATE_SECONDS, files: Collection[str] = TEMPLATE_FILES
) -> Iterator[None]:
    """Stop code from ``files`` (a template's compiled code) that runs past ``seconds``."""
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()

    def local(frame: Any, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        if time.monotonic() > deadline:
            raise BudgetExceeded(f"it ran longer than {seconds:g} s")
        return local

    def calls(frame: Any, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        return local if frame.f_code.co_filename in files else None

    sys.settrace(calls)
    try:
        yield
    finally:
        sys.settrace(previous)


def _size(value: Any) -> Optional[int]:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def check_binop(operator: str, left: Any, right: Any, limit: int = TEMPLATE_CHARS) -> None:
    """Refuse an operation whose result would be larger than ``limit`` before it runs."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            size = _size(seq)
            if size is not None and isinstance(times, int) and size * times > limit:
                raise BudgetExceeded(f"it builds a value of {size * times} items")
    elif operator == "+":
        a, b = _size(left), _size(right)
        if a is not None and b is not None and a + b > limit:
            raise BudgetExceeded(f"it builds a value of {a + b} items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and right * math.log10(abs(left)) > 10_000:
            raise BudgetExceeded(
                f"it computes a number of more than 10000 digits ({left}**{right})"
            )


class _Budgeted:
    intercepted_binops = frozenset({"*", "+", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)  # type: ignore[misc]


class BudgetedSandbox(_Budgeted, SandboxedEnvironment):
    """Jinja's sandbox, with the size budget on ``*``, ``+`` and ``**``."""


class ImmutableBudgetedSandbox(_Budgeted, ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (what transformers renders chat templates in), budgeted."""


def render_budgeted(template: Any, context: Any, limit: int = TEMPLATE_CHARS) -> str:
    """``template.render(**context)`` within the time budget, its output within ``limit``."""
    out = []
    total = 0
    with time_budget():
        for piece in template.generate(**context):
            total += len(piece)
            if total > limit:
                raise BudgetExceeded(f"its output grew beyond {limit} characters")
            out.append(piece)
    return "".join(out)
