"""The validated ``[components.llama.generation]`` section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from confection import ConfigValidationError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..errors import ConstraintError, Errors
from ..types import Constraint

# The constraint settings: at most one is set. Left out of the fingerprint while unset, so
# the cache keys of unconstrained configs are those from before these settings existed.
CONSTRAINT_FIELDS = ("json_schema", "json_schema_path", "regex", "choices")


class GenerationConfig(BaseModel):
    """Sampling and stopping parameters. ``temperature = 0`` is greedy; ``top_k = 0`` is off
    (Meta's reference semantics, unlike transformers' default of 50).

    Structured output: ``json_schema`` (a table, or JSON text), ``json_schema_path`` (a JSON
    file), ``regex`` or ``choices`` (a list of strings) makes every completion match it,
    token by token (``grammar.py``); a request's own constraint takes its place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int = 0
    stop: List[str] = Field(default_factory=list)
    stop_token_ids: List[int] = Field(default_factory=list)
    echo: bool = False
    json_schema: Optional[Union[Dict[str, Any], str]] = None
    json_schema_path: Optional[str] = None
    regex: Optional[str] = None
    choices: Optional[List[str]] = None
    # the most tokens one free string of json_schema may hold (None: no cap); left out of
    # the fingerprint while unset
    max_string_tokens: Optional[int] = Field(None, ge=1)
    _constraint: Optional[Constraint] = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_constraint(self) -> GenerationConfig:
        names = [n for n in CONSTRAINT_FIELDS if getattr(self, n) is not None]
        if len(names) > 1:
            raise ConstraintError(Errors.E420.format(names=", ".join(names)))
        self._constraint = self._read_constraint()
        return self

    def _read_constraint(self) -> Optional[Constraint]:
        cap = self.max_string_tokens
        if cap is not None and self.json_schema is None and self.json_schema_path is None:
            what = next((n for n in CONSTRAINT_FIELDS if getattr(self, n) is not None), None)
            raise ConstraintError(Errors.E652.format(value=cap, what=what or "no constraint"))
        if self.json_schema is not None:
            return Constraint("json_schema", schema_text(self.json_schema), cap or 0)
        if self.json_schema_path is not None:
            path = Path(self.json_schema_path).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ConstraintError(Errors.E427.format(path=str(path), error=e)) from None
            try:
                return Constraint("json_schema", schema_text(json.loads(text)), cap or 0)
            except ValueError as e:
                raise ConstraintError(Errors.E427.format(path=str(path), error=e)) from None
        if self.regex is not None:
            return Constraint("regex", self.regex)
        if self.choices is not None:
            if not self.choices or not all(self.choices):
                raise ConstraintError(Errors.E423.format(spec=json.dumps(self.choices)))
            return Constraint("choices", json.dumps(list(self.choices)))
        return None

    @property
    def constraint(self) -> Optional[Constraint]:
        """The constraint the settings describe (a schema file read once), or None."""
        return self._constraint

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def fingerprint(self) -> str:
        """A stable hash of every parameter, for cache keys (a schema file by its content)."""
        unset = {"max_string_tokens"} if self.max_string_tokens is None else set()
        payload: Dict[str, Any] = self.model_dump(exclude=set(CONSTRAINT_FIELDS) | unset)
        if self._constraint is not None:
            payload["constraint"] = [self._constraint.kind, self._constraint.spec]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def schema_text(schema: Union[Dict[str, Any], str]) -> str:
    """The schema as JSON text, its keys in their given order (the order properties are
    generated in)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise ConstraintError(Errors.E421.format(error=e)) from None
    if not isinstance(schema, dict):
        raise ConstraintError(Errors.E428.format(kind=type(schema).__name__))
    return json.dumps(schema)


def generation_config(
    generation: Dict[str, Any], *, title: str, defaults: Optional[Mapping[str, Any]] = None
) -> GenerationConfig:
    """The ``generation`` block over ``defaults``; a bad setting is a ConfigValidationError
    naming ``generation.<setting>`` under ``title``."""
    try:
        return GenerationConfig(**{**(defaults or {}), **generation})
    except ValidationError as e:
        errors = [
            {"loc": ["generation", *map(str, err["loc"])], "msg": err["msg"]} for err in e.errors()
        ]
        raise ConfigValidationError(
            config={"generation": generation}, errors=errors, title=title
        ) from None
