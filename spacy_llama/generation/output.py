"""What leaves the engine. Results are built once and never changed afterwards: the
cached, raw answer stays raw, and ``echo`` makes a new result with the prompt in front."""

from __future__ import annotations

import dataclasses

from ..types import GenerationRequest, GenerationResult
from .config import GenerationConfig


def finish(
    req: GenerationRequest, res: GenerationResult, config: GenerationConfig
) -> GenerationResult:
    """The result handed to the task for ``req`` (a copy when anything is added)."""
    if config.echo:
        return dataclasses.replace(res, text=req.prompt + res.text)
    return res
