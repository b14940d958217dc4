"""The JSON schema of ``spacy-llama.Extract.v1``: read from the config (inline or a file),
checked once when the pipeline is built, and specialised per doc, where every span field's
string becomes an ``enum`` of that doc's own substrings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import jsonschema

from ..errors import Errors, SchemaError

Schema = Dict[str, Any]


def load_schema(schema: Optional[Union[str, Schema]], schema_path: Optional[str]) -> Schema:
    """The schema given inline (a dict, or JSON text) or in a file: a valid JSON schema of
    an object with properties."""
    if (schema is None) == (schema_path is None):
        got = "both" if schema is not None else "neither"
        raise SchemaError(Errors.E360.format(got=got))
    setting = "schema" if schema is not None else f"schema_path ({schema_path!r})"
    if schema_path is not None:
        try:
            schema = Path(schema_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SchemaError(Errors.E361.format(path=schema_path, error=e)) from None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(Errors.E362.format(setting=setting, error=e)) from None
    return check_schema(schema, setting)


def check_schema(schema: Any, setting: str) -> Schema:
    if not isinstance(schema, dict):
        raise SchemaError(Errors.E364.format(setting=setting))
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        where = "/".join(map(str, e.absolute_path)) or "the top level"
        raise SchemaError(
            Errors.E363.format(setting=setting, error=e.message, where=where)
        ) from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise SchemaError(Errors.E364.format(setting=setting))
    return schema


def check_span_fields(schema: Schema, fields: Sequence[str]) -> List[str]:
    """Span fields must be top-level string or array-of-strings properties."""
    props = schema["properties"]
    for k, field in enumerate(fields):
        if field in list(fields)[:k]:
            raise SchemaError(Errors.E372.format(field=field))
        if field not in props:
            raise SchemaError(Errors.E365.format(field=field, known=sorted(props)))
        if _string_schema(props[field]) is None:
            raise SchemaError(Errors.E366.format(field=field, got=json.dumps(props[field])))
    return list(fields)


def is_array_field(prop: Schema) -> bool:
    return prop.get("type") == "array"


def _string_schema(prop: Any) -> Optional[Schema]:
    """The ``{"type": "string"}`` part of a span field (itself, or its array's items)."""
    if not isinstance(prop, dict):
        return None
    if prop.get("type") == "string":
        return prop
    items = prop.get("items")
    if prop.get("type") == "array" and isinstance(items, dict) and items.get("type") == "string":
        return items
    return None


def doc_schema(schema: Schema, fields: Sequence[str], candidates: List[str]) -> Schema:
    """A copy of ``schema`` whose span fields only admit ``candidates`` (an ``enum``)."""
    out = copy.deepcopy(schema)
    for field in fields:
        target = _string_schema(out["properties"][field])
        assert target is not None  # check_span_fields ran when the task was built
        target["enum"] = list(candidates)
    return out
