"""Refuse a step cap that no evaluation reaches: ``python scripts/check_train_steps.py STEPS FREQ``.

spaCy evaluates on dev every ``eval_frequency`` steps (step 0 included) and model-best is
the best evaluated model: with ``max_steps = 4`` and ``eval_frequency = 5`` only the
untrained step-0 model is ever evaluated, so model-best (what the project evaluates) is the
untrained model. A cap of 0 (no cap) passes. Exit code 1 with the fix, 0 otherwise.
"""

from __future__ import annotations

import sys
from typing import List, Optional


def problem(steps: int, eval_frequency: int) -> Optional[str]:
    if eval_frequency < 1:
        return f"eval_frequency must be at least 1 (got {eval_frequency})."
    if steps and steps % eval_frequency:
        good = max(eval_frequency, steps - steps % eval_frequency)
        return (
            f"train steps = {steps} is not a multiple of eval_frequency = {eval_frequency}: "
            f"the last evaluated model would be the one at step "
            f"{steps - steps % eval_frequency}"
            + (" (untrained)" if steps < eval_frequency else "")
            + f". Use a multiple, e.g. --vars.train_steps {good}, or change eval_frequency."
        )
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    steps, eval_frequency = int(args[0]), int(args[1])
    message = problem(steps, eval_frequency)
    if message:
        print(f"[spacy-llama] {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
