"""The units and roundings the scenarios' figures are reported in."""

from __future__ import annotations

MIB = 1024 * 1024


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
