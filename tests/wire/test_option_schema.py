"""The console's option schema, generated from ffserve.wire.options."""

from __future__ import annotations

import json
from typing import Any

import attrs

from ffserve.wire.option_schema import describe_operations
from ffserve.wire.options import AUDIO_FORMATS, FILTER_TYPES, OPERATIONS, SAMPLE_RATES


def fields_of(described: dict[str, Any], operation: str) -> dict[str, dict[str, Any]]:
    return {field["name"]: field for field in described[operation]["fields"]}


def test_every_operation_and_every_field_is_described() -> None:
    described = describe_operations()
    assert list(described) == list(OPERATIONS)
    for name, cls in OPERATIONS.items():
        assert list(fields_of(described, name)) == [f.name for f in attrs.fields(cls)]
    assert described["probe"] == {"fields": []}
    json.dumps(described)  # served as JSON as it is


def test_ranges_defaults_and_requirement() -> None:
    described = describe_operations()
    speed = fields_of(described, "speed")
    assert speed["speed_factor"] == {
        "name": "speed_factor",
        "type": "number",
        "required": True,
        "nullable": False,
        "minimum": 0.25,
        "maximum": 10,
    }
    assert speed["maintain_pitch"]["type"] == "boolean"
    assert speed["maintain_pitch"]["default"] is True
    crf = fields_of(described, "compress")["crf"]
    assert (crf["type"], crf["minimum"], crf["maximum"]) == ("integer", 0, 51)
    assert (crf["required"], crf["nullable"], crf["default"]) == (False, True, None)
    thumbnail = fields_of(described, "thumbnail")
    assert (thumbnail["count"]["minimum"], thumbnail["count"]["maximum"]) == (1, 20)
    assert (thumbnail["width"]["minimum"], thumbnail["width"]["maximum"]) == (16, 8192)
    gif = fields_of(described, "gif")
    assert (gif["duration"]["maximum"], gif["duration"]["default"]) == (30, 5.0)
    assert (gif["width"]["maximum"], gif["width"]["default"]) == (1920, 480)
    trim = fields_of(described, "trim")
    assert trim["start_time"]["required"] and trim["end_time"]["required"]


def test_closed_sets_are_enums() -> None:
    described = describe_operations()
    preset = fields_of(described, "compress")["preset"]
    assert (preset["enum"], preset["default"]) == (["low", "medium", "high", "custom"], "medium")
    audio = fields_of(described, "extract_audio")
    assert audio["format"]["enum"] == list(AUDIO_FORMATS)
    assert audio["sample_rate"]["type"] == "integer"
    assert audio["sample_rate"]["enum"] == list(SAMPLE_RATES)
    assert fields_of(described, "thumbnail")["format"]["enum"] == ["png", "jpeg", "jpg"]
    target = fields_of(described, "convert")["target_format"]
    assert target["required"] and "webm" in target["enum"] and "flac" in target["enum"]


def test_filters_are_a_list_of_variants() -> None:
    filters = fields_of(describe_operations(), "filter")["filters"]
    assert (filters["type"], filters["minItems"], filters["maxItems"]) == ("array", 1, 20)
    assert list(filters["variants"]) == list(FILTER_TYPES)
    rotate = {f["name"]: f for f in filters["variants"]["rotate"]}
    assert (rotate["angle"]["minimum"], rotate["angle"]["maximum"]) == (-360, 360)
    normalize = {f["name"]: f for f in filters["variants"]["normalize"]}
    assert normalize["target_lufs"]["default"] == -16.0
