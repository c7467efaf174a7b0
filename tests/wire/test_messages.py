"""Sans-I/O: text message codec, binary framing, strict schema. Plain synchronous tests."""

from __future__ import annotations

import json
import struct

import pytest

from ffserve.errors import ErrorCode, FFserveError, ValidationError
from ffserve.wire.binary import decode_binary, encode_binary
from ffserve.wire.messages import (
    Ack,
    CancelJob,
    Completed,
    Error,
    Ping,
    Pong,
    Progress,
    StartJob,
    UploadInput,
    UrlInput,
    decode_client_message,
    encode,
    job_id_of,
)
from ffserve.wire.options import SpeedOptions, parse_options


def start(**fields: object) -> str:
    message = {
        "type": "start_job",
        "job_id": "j",
        "operation": "speed",
        "input": {"source": "upload"},
        "options": {"speed_factor": 2},
    }
    message.update(fields)
    return json.dumps(message)


def test_start_job_decodes() -> None:
    message = decode_client_message(start())
    assert message == StartJob("j", "speed", UploadInput(), {"speed_factor": 2})


def test_url_input_decodes() -> None:
    message = decode_client_message(start(input={"source": "url", "url": "https://a/b.mp4"}))
    assert isinstance(message, StartJob)
    assert message.input == UrlInput("https://a/b.mp4")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"ping"}', Ping()),
        ('{"type":"cancel_job","job_id":"x"}', CancelJob("x")),
    ],
)
def test_small_messages(text: str, expected: object) -> None:
    assert decode_client_message(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", ErrorCode.INVALID_JSON),
        ("[1, 2]", ErrorCode.INVALID_JSON),
        ('"ping"', ErrorCode.INVALID_JSON),
        ('{"job_id": "x"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
        ('{"type": "explode"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
        ('{"type": 5}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ],
)
def test_undecodable_frames(text: str, code: str) -> None:
    with pytest.raises(FFserveError) as info:
        decode_client_message(text)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"job_id": 7}, "$.job_id"),
        ({"job_id": ""}, "$.job_id"),
        ({"job_id": "x" * 129}, "$.job_id"),
        ({"input": {"source": "ftp"}}, "$.input"),
        ({"input": {"source": "url"}}, "$.input.url"),
        ({"input": {"source": "upload", "extra": 1}}, "$.input.extra"),
        ({"options": []}, "$.options"),
        ({"surprise": True}, "$.surprise"),
    ],
)
def test_invalid_start_job_names_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_client_message(start(**fields))
    assert info.value.field == field
    assert field in info.value.message


def error_reply(error: FFserveError) -> str:
    """The error frame as the connection sends it."""
    return encode(Error(error.code, error.message, "j", error.details))


@pytest.mark.parametrize("where", ["message", "options"])
def test_an_error_names_only_a_few_unknown_fields(where: str) -> None:
    """A frame of many unknown keys must not come back bigger than a small reply: the
    first few are named, the rest counted."""
    unknown = {f"unknown_key_{n:05d}": n for n in range(10_000)}
    with pytest.raises(ValidationError) as info:
        if where == "message":
            decode_client_message(start(**unknown))
        else:
            parse_options("speed", {"speed_factor": 2, **unknown})
    reply = error_reply(info.value)
    assert len(reply.encode()) < 1024, len(reply)
    prefix = "$." if where == "message" else "$.options."
    assert info.value.field == f"{prefix}unknown_key_00000"
    assert reply.count("unknown_key_") <= 4  # three in the message, one in details.field
    assert "and 9997 more" in info.value.message


def test_an_error_clips_a_long_unknown_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        decode_client_message(start(**{"k" * 100_000: 1, "x" * 70_000: 2}))
    reply = error_reply(info.value)
    assert len(reply.encode()) < 1024, len(reply)
    assert info.value.field is not None and info.value.field.startswith("$." + "k" * 64)


def test_missing_field_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        decode_client_message(
            '{"type": "start_job", "operation": "speed", "input": {"source": "upload"}}'
        )
    assert info.value.field == "$.job_id"
    assert "required" in info.value.message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"speed_factor": 0.1}, "$.options.speed_factor"),
        ({"speed_factor": 11}, "$.options.speed_factor"),
        ({"speed_factor": float("nan")}, "$.options.speed_factor"),
        ({"speed_factor": float("inf")}, "$.options.speed_factor"),
        ({"speed_factor": "2"}, "$.options.speed_factor"),
        ({"speed_factor": True}, "$.options.speed_factor"),
        ({"speed_factor": 2, "maintain_pitch": 1}, "$.options.maintain_pitch"),
        ({"speed_factor": 2, "crf": 20}, "$.options.crf"),
        ({}, "$.options.speed_factor"),
    ],
)
def test_option_errors_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_options("speed", options)
    assert info.value.field == field


def test_options_structure() -> None:
    assert parse_options("speed", {"speed_factor": 4}) == SpeedOptions(4.0, True)


def test_unknown_operation() -> None:
    with pytest.raises(ValidationError) as info:
        parse_options("teleport", {})
    assert info.value.code == ErrorCode.UNKNOWN_OPERATION


def test_job_id_of_recovers_the_id_for_error_reports() -> None:
    assert job_id_of(start(options={"speed_factor": "x"})) == "j"
    assert job_id_of("[]") is None
    assert job_id_of("{bad") is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Ack("j", "ok"), {"type": "ack", "job_id": "j", "message": "ok"}),
        (
            Progress("j", 12.5, "processing"),
            {"type": "progress", "job_id": "j", "percentage": 12.5, "stage": "processing"},
        ),
        (
            Completed("j", {"format": "mp4"}, "binary", "done"),
            {
                "type": "completed",
                "job_id": "j",
                "output_metadata": {"format": "mp4"},
                "delivery_method": "binary",
                "message": "done",
            },
        ),
        (Error("BUSY", "busy"), {"type": "error", "code": "BUSY", "message": "busy"}),
        (
            Error("JOB_FAILED", "x", "j", {"field": "$.a"}),
            {
                "type": "error",
                "code": "JOB_FAILED",
                "message": "x",
                "job_id": "j",
                "details": {"field": "$.a"},
            },
        ),
        (Pong(), {"type": "pong"}),
    ],
)
def test_server_messages_encode_exactly_v1(message: object, expected: dict[str, object]) -> None:
    assert json.loads(encode(message)) == expected  # type: ignore[arg-type]


def test_binary_round_trip() -> None:
    frame = decode_binary(encode_binary("j", "a.mp4", b"\x00\x01payload"))
    assert (frame.job_id, frame.filename, bytes(frame.payload)) == (
        "j",
        "a.mp4",
        b"\x00\x01payload",
    )


def header(obj: object) -> bytes:
    raw = json.dumps(obj).encode()
    return struct.pack(">I", len(raw)) + raw


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00",
        struct.pack(">I", 100) + b"{}",
        struct.pack(">I", 0) + b"data",
        struct.pack(">I", 3) + b"\xff\xfe\xfd",
        struct.pack(">I", 5) + b"nope!",
        header([1, 2]),
        header({"filename": "a"}),
        header({"job_id": 5, "filename": "a"}),
        header({"job_id": "j", "filename": 5}),
    ],
)
def test_bad_binary_frames(frame: bytes) -> None:
    with pytest.raises(FFserveError) as info:
        decode_binary(frame)
    assert info.value.code == ErrorCode.INVALID_BINARY
