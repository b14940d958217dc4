"""What the commands share (cli/command.py): the parser, overrides, the --quiet run."""

from __future__ import annotations

import argparse
import warnings
from typing import Any, Dict, List

import pytest

from spacy_llama.cli import build_parser
from spacy_llama.cli.command import add_command, positive, run_with_overrides, takes_overrides
from spacy_llama.cli.exit_codes import EXIT_USAGE


def parse(argv: List[str], *, quiet: bool = False) -> argparse.Namespace:
    return argparse.Namespace(overrides_argv=argv, quiet=quiet)


def test_run_with_overrides_hands_the_parsed_overrides_to_the_work() -> None:
    seen: List[Dict[str, Any]] = []
    args = parse(["--components.llama.batch_size", "4", "--nlp.lang=de"])
    assert run_with_overrides(args, lambda o: seen.append(o) or 7) == 7
    assert seen == [{"components.llama.batch_size": 4, "nlp.lang": "de"}]


def test_an_override_spacy_rejects_is_a_usage_exit_without_running(capsys: Any) -> None:
    ran: List[bool] = []
    assert run_with_overrides(parse(["positional"]), lambda o: ran.append(True) or 0) == EXIT_USAGE
    assert ran == []


def test_quiet_silences_warnings_only_while_the_work_runs() -> None:
    def work(overrides: Dict[str, Any]) -> int:
        warnings.warn("noisy", UserWarning, stacklevel=2)
        return 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_with_overrides(parse([], quiet=True), work)
        assert caught == []
        run_with_overrides(parse([]), work)
        assert [str(w.message) for w in caught] == ["noisy"]


def test_positive() -> None:
    assert positive("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        positive("0")


def test_add_command_keeps_the_docstring_as_written_and_takes_overrides() -> None:
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command")
    doc = "first line\n\n  1. an indented step\n  2. another"
    p = add_command(sub, "demo", help="a demo", doc=doc)
    takes_overrides(p, lambda args: 0, hint=" hint")
    assert "  1. an indented step\n  2. another" in p.format_help()
    args = parser.parse_args(["demo"])
    assert args.accepts_overrides is True and args.interrupted_hint == " hint"


def test_commands_with_overrides_say_so() -> None:
    parser = build_parser()
    for argv in (["annotate", "c", "i", "o"], ["distill", "t", "i", "o", "--student", "ner"],
                 ["evaluate", "c", "g"]):  # fmt: skip
        assert parser.parse_args(argv).accepts_overrides is True
    assert not getattr(parser.parse_args(["merge", "o", "s"]), "accepts_overrides", False)
