"""The one cattrs converter, strict about types, and range validators for attrs fields.

Every message, option set and config file is structured here, so the rules are the same
everywhere: no extra keys, no implicit type coercion (`"1.5"` is not a float, `true` is
not an int), no NaN or infinities, and every error names the JSON path of the bad field.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ffserve.errors import ValidationError

T = TypeVar("T")
# An error names this many problems and counts the rest, and clips each name and text it
# echoes: a 1 MiB frame of unknown keys (or one key a megabyte long) must not come back
# as an even bigger reply.
MAX_PROBLEMS_SHOWN = 3
MAX_NAME_SHOWN = 64
MAX_TEXT_SHOWN = 200

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {_json_type(value)}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"expected an integer, got {_json_type(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_json_type(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(str, _strict_str)


class FieldValueError(ValueError):
    """Raised by validators so that the error can name the field it belongs to."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@attrs.frozen
class InRange:
    """An attrs validator: `low <= value <= high`, skipping None (an unset optional).

    A class rather than a closure so the bounds can be read back: the console's option
    forms (ffserve.wire.option_schema) are generated from them.
    """

    low: float | None = None
    high: float | None = None

    def __call__(self, _: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
        low, high = self.low, self.high
        if value is None:
            return
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f"between {low:g} and {high:g}"
                if low is not None and high is not None
                else (f"at least {low:g}" if low is not None else f"at most {high:g}")
            )
            raise FieldValueError(
                attribute.name, f"{attribute.name} must be {bounds}, got {value:g}"
            )


@attrs.frozen
class OneOf:
    """An attrs validator for a closed set of values (skipping None); readable back as
    `choices`, like InRange."""

    choices: tuple[str | int, ...]

    def __call__(self, _: Any, attribute: attrs.Attribute[Any], value: str | int | None) -> None:
        if value is not None and value not in self.choices:
            raise FieldValueError(
                attribute.name,
                f"{attribute.name} must be one of {', '.join(map(str, self.choices))}, "
                f"got {value!r}",
            )


def in_range(low: float | None = None, high: float | None = None) -> InRange:
    """An attrs validator: `low <= value <= high`, skipping None (an unset optional)."""
    return InRange(low, high)


def one_of(*choices: str | int) -> OneOf:
    """An attrs validator for a closed set of words or numbers (skipping None)."""
    return OneOf(choices)


def non_empty(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    """An attrs validator: a string with something in it (skipping None)."""
    if value is not None and not value.strip():
        raise FieldValueError(attribute.name, f"{attribute.name} must not be empty")


def is_network() -> Callable[..., None]:
    """An attrs validator: an IP address or a CIDR network ("10.0.0.0/8", "::1")."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise FieldValueError(
                attribute.name, f"{attribute.name} must hold addresses or CIDRs, got {value!r}"
            ) from None

    return check


def structure(data: Any, cls: type[T], path: str = "$") -> T:
    """Structure `data` into `cls` or raise `ValidationError` naming the bad field.

    Errors: ValidationError whose message lists the first few problems as
    `what @ $.json.path` (cattrs' `transform_error` style) and counts the others, and
    whose `field` is the first bad path.
    """
    try:
        return converter.structure(data, cls)
    except (
        ClassValidationError,
        IterableValidationError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        problems = list(_problems(exc, path))
        shown = problems[:MAX_PROBLEMS_SHOWN]
        message = "; ".join(f"{_clip(text, MAX_TEXT_SHOWN)} @ {where}" for where, text in shown)
        if len(problems) > len(shown):
            message += f"; and {len(problems) - len(shown)} more"
        raise ValidationError(message, field=problems[0][0]) from None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _problems(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Walk cattrs' exception groups, yielding (json path, description) pairs."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _problems(sub, f"{path}.{note.name}")
        for sub in without:
            yield from _problems(sub, path)
    elif isinstance(exc, IterableValidationError):
        items, rest = exc.group_exceptions()
        for item, index_note in items:
            yield from _problems(item, f"{path}[{index_note.index}]")
        for item in rest:
            yield from _problems(item, path)
    elif isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            yield from _problems(member, path)
    elif isinstance(exc, FieldValueError):
        yield f"{path}.{exc.name}", exc.message
    elif isinstance(exc, ForbiddenExtraKeysError):
        for name in sorted(exc.extra_fields):
            yield f"{path}.{_clip(name, MAX_NAME_SHOWN)}", "unknown field"
    elif isinstance(exc, KeyError):
        yield path, "required field missing"
    elif isinstance(exc, AttributeError):
        # cattrs calls `.keys()`/`.get()` on what should be a JSON object.
        yield path, "expected an object"
    elif isinstance(exc, TypeError | ValueError) and str(exc).startswith("expected"):
        yield path, str(exc)
    else:
        yield path, cattrs.v.format_exception(exc, None)
