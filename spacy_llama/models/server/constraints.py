"""Structured output on a server: how each server family is asked to enforce a
:class:`~spacy_llama.types.Constraint` in a completion request.

* vLLM: ``guided_json`` / ``guided_regex`` / ``guided_choice``.
* llama.cpp's ``llama-server``: ``json_schema`` for a schema, a GBNF ``grammar`` for choices
  (an alternation of literal strings); it has no regular expressions.
* llama-cpp-python's server: only a GBNF ``grammar``: choices as above, a schema through
  llama-cpp-python's own schema-to-GBNF converter (when it is installed here too).

A server of another kind would ignore fields it does not know and answer unconstrained, so
a constraint it cannot be asked to enforce is a coded error when the pipeline is built.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ...errors import ConstraintError, Errors
from ...types import Constraint

SERVER_KINDS = ("llama.cpp", "llama-cpp-python", "vllm")
VLLM_FIELDS = {"json_schema": "guided_json", "regex": "guided_regex", "choices": "guided_choice"}


def choices_gbnf(choices: List[str]) -> str:
    """``root ::= "a" | "b"``: JSON string escapes (ASCII only) are GBNF's too."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=True) for c in choices)


def schema_gbnf(spec: str, url: str) -> str:
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        raise ConstraintError(
            Errors.E429.format(kind="json_schema", url=url, server="llama-cpp-python")
        ) from None
    return str(json_schema_to_gbnf(spec))


def constraint_fields(constraint: Constraint, kind: Optional[str], url: str) -> Dict[str, Any]:
    """The request fields that make a ``kind`` server enforce ``constraint``."""
    if kind is None:
        raise ConstraintError(Errors.E430.format(url=url, kinds=", ".join(SERVER_KINDS)))
    if constraint.max_string_tokens:  # a local engine's per-row cap, no server field
        raise ConstraintError(Errors.E653.format(url=url, value=constraint.max_string_tokens))
    spec = constraint.spec
    if kind == "vllm":
        value: Any = spec if constraint.kind == "regex" else json.loads(spec)
        return {VLLM_FIELDS[constraint.kind]: value}
    if constraint.kind == "choices":
        return {"grammar": choices_gbnf(json.loads(spec))}
    if constraint.kind == "json_schema" and kind == "llama.cpp":
        return {"json_schema": json.loads(spec)}
    if constraint.kind == "json_schema":
        return {"grammar": schema_gbnf(spec, url)}
    raise ConstraintError(Errors.E429.format(kind=constraint.kind, url=url, server=kind))
