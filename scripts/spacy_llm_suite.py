"""Run spacy-llm's own task tests with spacy-llama.SpacyLLM.v1 in place of the hosted
models they call (docs/spacy_llm.md reports the outcome).

    python scripts/spacy_llm_suite.py [--model-path PATH] [--max-new-tokens N]
                                      [--junit FILE] [PYTEST ARGS...]

spacy-llm's tests that query a model use ``spacy.GPT-3-5.v1``/``v2``/``v3`` (OpenAI) and are
marked ``external``. This script runs the installed spacy-llm's ``tests/tasks`` with
``--external``, and, as a pytest plugin (this module, ``-p spacy_llm_suite``), registers
every OpenAI, Anthropic, Cohere, PaLM and hub model name of spacy-llm's ``llm_models``
registry again as spacy-llama.SpacyLLM.v1 on a local model: the embedded SmolLM2 by
default, or ``--model-path`` (a Hugging Face folder or a .gguf file). Nothing leaves the
machine. The skip conditions of those tests check that an API key variable is set; they
get the placeholder ``not-used``, which nothing reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

ENV_MODEL = "SPACY_LLAMA_SUITE_MODEL"
ENV_MAX_NEW = "SPACY_LLAMA_SUITE_MAX_NEW_TOKENS"
ENV_REPORT = "SPACY_LLAMA_SUITE_REPORT"
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CO_API_KEY", "PALM_API_KEY")
HOSTED_PREFIXES = (
    "spacy.GPT-",
    "spacy.Text-",
    "spacy.Code-",
    "spacy.Davinci",
    "spacy.Curie",
    "spacy.Babbage",
    "spacy.Ada",
    "spacy.Claude",
    "spacy.Command",
    "spacy.PaLM",
    "spacy.Azure",
    "spacy.Dolly",
    "spacy.Falcon",
    "spacy.Llama2",
    "spacy.Mistral",
    "spacy.OpenLLaMA",
    "spacy.StableLM",
)


def model_block() -> Optional[Dict[str, Any]]:
    path = os.environ.get(ENV_MODEL)
    if not path:
        return None
    if path.endswith(".gguf"):
        return {"@llama_models": "spacy-llama.GGUF.v1", "path": path, "device": "cpu"}
    return {"@llama_models": "spacy-llama.HF.v1", "path": path, "device": "cpu"}


# node id -> whether that test built the substitute (queried the model)
USED: Dict[str, bool] = {}
OUTCOMES: Dict[str, str] = {}
_current = [""]


def substitute(
    name: str = "",
    config: Optional[Dict[str, Any]] = None,
    strict: bool = True,
    max_tries: int = 5,
    interval: float = 1.0,
    max_request_time: float = 30.0,
    endpoint: Optional[str] = None,
    context_length: Optional[int] = None,
    config_init: Optional[Dict[str, Any]] = None,
    config_run: Optional[Dict[str, Any]] = None,
) -> Any:
    """Whatever spacy-llm's model block said (every argument of its REST and hub models is
    accepted, none is used): our backend on the local model."""
    from spacy.util import registry

    from spacy_llama.llm_compat.backend import spacy_llm_v1

    block = model_block()
    model = registry.resolve({"m": block})["m"] if block is not None else None
    max_new = int(os.environ.get(ENV_MAX_NEW, "128"))
    USED[_current[0]] = True
    return spacy_llm_v1(model=model, generation={"max_new_tokens": max_new})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    _current[0] = item.nodeid
    USED.setdefault(item.nodeid, False)


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed or report.when == "call" or report.skipped:
        kind = "error" if report.failed and report.when != "call" else report.outcome
        OUTCOMES.setdefault(report.nodeid, kind)


def pytest_sessionfinish(session: Any) -> None:
    rows = [
        {"test": k, "outcome": v, "queried_model": USED.get(k, False)}
        for k, v in sorted(OUTCOMES.items())
    ]
    out = os.environ.get(ENV_REPORT)
    if out:
        Path(out).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n" + "\n".join(summary(rows)))


def summary(rows: List[Dict[str, Any]]) -> List[str]:
    """Per test file: passed/failed among the tests that queried the model, and among the
    tests that did not (spacy-llm's own parsing, prompts and config checks)."""
    table: Dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        name = r["test"].split("::")[0].split("tests/tasks/")[-1]
        table[name][("model" if r["queried_model"] else "plain", r["outcome"])] += 1
    lines = ["| test file | model: passed | model: failed | no model: passed | no model: failed |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for name, c in sorted(table.items()):
        cells = [c[("model", "passed")], c[("model", "failed")] + c[("model", "error")]]
        cells += [c[("plain", "passed")], c[("plain", "failed")] + c[("plain", "error")]]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    return lines


def pytest_configure(config: Any) -> None:
    """Re-register spacy-llm's hosted and hub model names as the substitute."""
    import spacy_llm  # noqa: F401  (creates the llm_* registries)
    from spacy.util import registry

    for name in list(registry.llm_models.get_all()):
        if name.startswith(HOSTED_PREFIXES):
            registry.llm_models.register(name, func=substitute)


def main(argv: Optional[list] = None) -> int:
    import spacy_llm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--junit", type=Path)
    parser.add_argument("--report", type=Path, help="JSON: each test's outcome, model or not")
    args, rest = parser.parse_known_args(argv)
    if args.model_path is not None:
        os.environ[ENV_MODEL] = str(args.model_path.resolve())
    os.environ[ENV_MAX_NEW] = str(args.max_new_tokens)
    if args.report is not None:
        os.environ[ENV_REPORT] = str(args.report.resolve())
    for var in KEY_VARIABLES:
        os.environ.setdefault(var, "not-used")
    os.environ["TEST_EXTERNAL"] = "1"
    sys.path.insert(0, str(Path(__file__).parent))
    tests = Path(spacy_llm.__file__).parent / "tests" / "tasks"
    pytest_args = [str(tests), "-p", "spacy_llm_suite", "-q", "-p", "no:cacheprovider"]
    pytest_args += ["-W", "ignore::pytest.PytestUnknownMarkWarning", "-rN"]
    if args.junit is not None:
        pytest_args.append(f"--junitxml={args.junit}")
    return int(pytest.main(pytest_args + rest))


if __name__ == "__main__":
    sys.exit(main())
