"""The local tokenizer of a served model (``tokenizer_path``): a Hugging Face tokenizer
folder, or a .gguf file's tokenizer metadata. With one, prompts are counted and chat
templates rendered here, so prompts, cache keys and logprobs match the local backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from ...errors import Errors, ModelLoadError


def load_tokenizer(path: Union[str, Path]) -> Any:
    """A Hugging Face tokenizer folder, or a .gguf file (its tokenizer metadata)."""
    from transformers import AutoTokenizer

    file = Path(path).expanduser()
    try:
        if file.suffix == ".gguf" and file.is_file():
            return gguf_tokenizer(file)
        return AutoTokenizer.from_pretrained(str(file), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(Errors.E140.format(path=str(file), error=e)) from e


def gguf_tokenizer(file: Path) -> Any:
    """Reuse GGUF.v1's conversion if it exists (fast); else read the file's metadata."""
    from transformers import AutoTokenizer

    from ..gguf import cache_problem, converted_folder, fix_special_tokens

    folder = converted_folder(file)
    if folder.exists() and cache_problem(folder) is None:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    fix_special_tokens(tokenizer, file)
    return tokenizer
