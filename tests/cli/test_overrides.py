"""An override without a value is a usage error; before, spaCy's parser made it ``true``
(``max_new_tokens = 1``) and the run exited 0 after generating one token per doc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spacy_llama.cli import main
from spacy_llama.cli.overrides import check_values
from spacy_llama.errors import UsageError

from ..fixtures.corpus_files import corpus, read_jsonl, write_jsonl
from ..fixtures.helpers import write_config


def test_override_without_value_stops_the_run(tmp_path: Path, tiny_hf: Path, capsys: Any) -> None:
    config = write_config(tmp_path, tiny_hf)
    inp = write_jsonl(tmp_path / "in.jsonl", corpus(2))
    out = tmp_path / "out.jsonl"
    args = ["annotate", str(config), str(inp), str(out), "--quiet"]
    assert main([*args, "--components.llama.generation.max_new_tokens"]) == 2
    err = capsys.readouterr().err
    assert "[E802]" in err and "--components.llama.generation.max_new_tokens" in err
    assert not out.exists()
    assert main([*args, "--components.llama.generation.max_new_tokens=3"]) == 0
    assert len(read_jsonl(out)) == 2


@pytest.mark.parametrize(
    "argv",
    [["--nlp.batch_size"], ["--nlp.batch_size", "--components.llama.batch_size", "4"]],
)
def test_a_missing_value_is_found_wherever_it_is(argv: Any) -> None:
    with pytest.raises(UsageError, match="E802.*--nlp.batch_size"):
        check_values(argv)


def test_values_including_negative_numbers_pass() -> None:
    check_values(["--a.b", "-1", "--c.d=true", "--e.f", "x"])
