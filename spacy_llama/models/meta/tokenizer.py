"""The checkpoint's tokenizer: Meta's ``tokenizer.model`` or a Hugging Face tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

from ...errors import Errors, ModelLoadError


def tokenizer_files(folder: Path, tokenizer_path: Optional[Path]) -> List[Path]:
    """Meta's tokenizer.model (file or a folder holding it) or a Hugging Face tokenizer folder."""
    where = tokenizer_path or folder
    if where.is_file():
        return [where]
    if (where / "tokenizer.model").is_file() and not (where / "tokenizer.json").is_file():
        return [where / "tokenizer.model"]
    hf = [where / n for n in ("tokenizer.json", "tokenizer_config.json") if (where / n).is_file()]
    if tokenizer_path is not None and hf:
        return hf
    if (where / "tokenizer.model").is_file():
        return [where / "tokenizer.model"]
    raise ModelLoadError(Errors.E192.format(path=str(where)))


def load_tokenizer(files: List[Path], *, variant: str) -> Tuple[Any, List[int]]:
    from .tokenizer_formats import load_meta_tokenizer

    if files[0].name == "tokenizer.json" or files[0].name == "tokenizer_config.json":
        return _hf_tokenizer(files[0].parent)
    return load_meta_tokenizer(files[0], llama3_variant=variant)


def _hf_tokenizer(folder: Path) -> Tuple[Any, List[int]]:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(Errors.E193.format(path=str(folder), error=e)) from e
    stops = [tok.eos_token_id] + [
        tok.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|eom_id|>") if t in tok.get_vocab()
    ]
    return tok, [int(i) for i in stops if i is not None]


def check_vocab(tokenizer: Any, rows: int, tok_file: Path, folder: Path) -> None:
    """Checked before merging, so a wrong tokenizer fails in seconds, not minutes."""
    if len(tokenizer) != rows:
        raise ModelLoadError(
            Errors.E194.format(
                path=str(tok_file), n_tokens=len(tokenizer), folder=str(folder), rows=rows
            )
        )
