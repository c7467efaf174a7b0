"""The operations' options as JSON-ready data, generated from their attrs classes.

The web console builds its forms from this (served as `/console/schema.json`), so a field,
range or choice added to `ffserve.wire.options` shows up there with nothing else to edit.
Each field is described as

    {"name": "crf", "type": "integer", "required": false, "nullable": true,
     "default": null, "minimum": 0, "maximum": 51}

with `enum` for closed sets, and for `filter`'s list `"type": "array"`, `minItems`,
`maxItems` and `variants` (each filter type's own fields). Cross-field rules (`timestamp`
or `count`, `end_time > start_time`) stay with the server, which names them in its errors.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from ffserve.schema import InRange, OneOf
from ffserve.wire.options import FILTER_TYPES, MAX_FILTERS, OPERATIONS

_SCALARS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def describe_operations() -> dict[str, dict[str, Any]]:
    """Every operation of `OPERATIONS`, in its order, with its fields described."""
    return {name: {"fields": describe_fields(cls)} for name, cls in OPERATIONS.items()}


def describe_fields(cls: type[Any]) -> list[dict[str, Any]]:
    """The fields of one attrs options class, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [_describe(field, hints[field.name]) for field in attrs.fields(cls)]


def _describe(field: attrs.Attribute[Any], hint: Any) -> dict[str, Any]:
    kind, nullable = _unwrap_optional(hint)
    required = field.default is attrs.NOTHING
    out: dict[str, Any] = {"name": field.name, "required": required, "nullable": nullable}
    if not required:
        # An attrs Factory (typed as a function, hence no isinstance) makes its default.
        factory = getattr(field.default, "factory", None)
        out["default"] = factory() if callable(factory) else field.default
    if typing.get_origin(kind) is tuple:
        out["type"] = "array"
        out["minItems"], out["maxItems"] = 1, MAX_FILTERS
        out["variants"] = {tag: describe_fields(variant) for tag, variant in FILTER_TYPES.items()}
        return out
    if kind not in _SCALARS:
        raise TypeError(f"cannot describe option {field.name} of type {kind!r}")
    out["type"] = _SCALARS[kind]
    validator = field.validator
    if isinstance(validator, InRange):
        if validator.low is not None:
            out["minimum"] = validator.low
        if validator.high is not None:
            out["maximum"] = validator.high
    elif isinstance(validator, OneOf):
        out["enum"] = list(validator.choices)
    return out


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True); `int` -> (int, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) == 1 and len(members) < len(typing.get_args(hint)):
            return members[0], True
    return hint, False
