"""torch's threads come from the cores this process may use, with an override
(SPACY_LLAMA_THREADS); loading a pipeline in the CLI says what it is doing."""

from __future__ import annotations

import pytest
import srsly
import torch

from spacy_llama.cli import main
from spacy_llama.errors import SettingError
from spacy_llama.models import threads as threads_mod
from spacy_llama.models.threads import (
    ENV,
    choose_threads,
    configure_threads,
    reset_threads_choice,
    usable_cores,
)


@pytest.fixture
def fresh(monkeypatch):
    """No choice made yet, no thread variables, torch's count restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    reset_threads_choice()
    yield monkeypatch
    reset_threads_choice()
    torch.set_num_threads(before)


def test_default_is_the_affinity_mask(fresh):
    fresh.setattr(threads_mod.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3
    assert choose_threads() == (3, "os.sched_getaffinity")


def test_env_override_wins_and_omp_is_left_to_torch(fresh):
    fresh.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads() == (None, "OMP_NUM_THREADS")
    fresh.setenv(ENV, "1")
    assert choose_threads() == (1, ENV)
    assert choose_threads(explicit=4) == (4, "the caller")


@pytest.mark.parametrize("value", ["zero", "0", "-2", "1.5"])
def test_bad_env_value_is_a_coded_error(fresh, value):
    fresh.setenv(ENV, value)
    with pytest.raises(SettingError, match=rf"E832.*{ENV} = '{value}'"):
        choose_threads()


def test_configure_sets_torch_once_per_process(fresh):
    fresh.setenv(ENV, "1")
    assert configure_threads() == (1, ENV)
    assert torch.get_num_threads() == 1
    fresh.setenv(ENV, "2")
    assert configure_threads() == (1, ENV)  # the first choice stands (a Ray actor's share)
    assert torch.get_num_threads() == 1


def test_cli_loading_says_what_it_does(fresh, tiny_hf, tmp_path, capsys):
    import sys

    from ..batch.test_evaluate import GOLD, TEXTCAT, write_config

    fresh.setattr(sys.stderr, "isatty", lambda: True)  # a user at a terminal
    fresh.setenv(ENV, "1")
    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    assert main(["evaluate", str(cfg), str(gold)]) == 0
    err = capsys.readouterr().err
    assert f"loading the pipeline {cfg} ..." in err
    assert "components: llama; torch threads: 1, from SPACY_LLAMA_THREADS" in err


def test_no_loading_lines_when_stderr_is_not_a_terminal(fresh, tiny_hf, tmp_path, capsys):
    from ..batch.test_evaluate import GOLD, TEXTCAT, write_config

    gold = tmp_path / "gold.jsonl"
    srsly.write_jsonl(gold, GOLD)
    cfg = write_config(tmp_path / "textcat.cfg", tiny_hf, TEXTCAT)
    assert main(["evaluate", str(cfg), str(gold)]) == 0
    assert "loading the pipeline" not in capsys.readouterr().err  # logs: problems only
