"""Protocol messages (text frames) as frozen attrs classes, and their JSON codec.

Sans-I/O: `decode_client_message(str) -> ClientMessage` and `encode(ServerMessage) -> str`.
The tagged union on `"type"` is configured once here on the shared converter. Optional
server fields that are unset are left out of the JSON, so a v1 client sees exactly v1.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
from cattrs.gen import make_dict_unstructure_fn
from cattrs.strategies import configure_tagged_union

from ffserve.errors import ErrorCode, ProtocolError
from ffserve.schema import FieldValueError, converter, in_range, one_of, structure


def _job_id(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not 1 <= len(value) <= 128:
        raise FieldValueError(attribute.name, "job_id must be 1 to 128 characters")


T = TypeVar("T")

# --- client -> server ---------------------------------------------------------------


def _sha256(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (len(value) != 64 or value.strip("0123456789abcdefABCDEF")):
        raise FieldValueError(attribute.name, "sha256 must be 64 hexadecimal digits")


@attrs.frozen
class FileSpec:
    """Extension: an upload announced for chunked transfer."""

    size: int = attrs.field(validator=in_range(1, 2**53))
    sha256: str | None = attrs.field(default=None, validator=_sha256)


@attrs.frozen
class UploadInput:
    """The input arrives as binary frame(s) on this connection.

    Extension: `files` announces each upload's size (and checksum), which switches those
    uploads to chunked transfer (docs/protocol.md, "Chunked transfer").
    """

    files: list[FileSpec] | None = None


@attrs.frozen
class UrlInput:
    """The server fetches the input from `url` (http or https)."""

    url: str


Input = UploadInput | UrlInput


@attrs.frozen
class Delivery:
    """Extension: how results come back. `binary` is v1's single frame per output."""

    mode: str = attrs.field(default="binary", validator=one_of("binary", "chunked"))
    chunk_kb: int | None = attrs.field(default=None, validator=in_range(16, 16384))


@attrs.frozen
class OutputTarget:
    """Extension: upload the result to this HTTP(S) URL with PUT instead of sending it."""

    url: str


@attrs.frozen
class ProgressRequest:
    """Extension: `detail` adds `eta_s` and `speed` to the job's progress messages."""

    detail: bool = False


@attrs.frozen
class StartJob:
    job_id: str = attrs.field(validator=_job_id)
    operation: str
    input: Input
    # Structured per operation once the operation is known (see `ffserve.wire.options`).
    options: dict[str, Any] = attrs.field(factory=dict)
    delivery: Delivery | None = None
    output: OutputTarget | None = None
    progress: ProgressRequest | None = None


@attrs.frozen
class CancelJob:
    job_id: str = attrs.field(validator=_job_id)


@attrs.frozen
class Ping:
    pass


ClientMessage = StartJob | CancelJob | Ping
CLIENT_TYPES: dict[str, type[Any]] = {"start_job": StartJob, "cancel_job": CancelJob, "ping": Ping}

# --- server -> client ---------------------------------------------------------------


@attrs.frozen
class Ack:
    job_id: str
    message: str


@attrs.frozen
class Progress:
    job_id: str
    percentage: float
    stage: str
    ffmpeg_log: str | None = None
    # Extension, only for jobs that asked (`"progress": {"detail": true}`): estimated
    # seconds left, and FFmpeg's speed (output seconds per second).
    eta_s: float | None = None
    speed: float | None = None


@attrs.frozen
class Completed:
    job_id: str
    output_metadata: dict[str, Any]
    delivery_method: str
    message: str
    # Extension: present only for jobs with several outputs (e.g. thumbnail count > 1).
    outputs: list[dict[str, Any]] | None = None


@attrs.frozen
class Error:
    code: str
    message: str
    job_id: str | None = None
    details: dict[str, Any] | None = None


@attrs.frozen
class Pong:
    pass


@attrs.frozen
class UploadProgress:
    """Extension (chunked uploads only): bytes of upload `file` written to disk so far."""

    job_id: str
    file: int
    received_bytes: int
    total_bytes: int
    percentage: float


ServerMessage = Ack | Progress | Completed | Error | Pong | UploadProgress
SERVER_TYPES: dict[type[Any], str] = {
    Ack: "ack",
    Progress: "progress",
    Completed: "completed",
    Error: "error",
    Pong: "pong",
    UploadProgress: "upload_progress",
}

_TAGS = {**{cls: tag for tag, cls in CLIENT_TYPES.items()}, **SERVER_TYPES}

for _cls in SERVER_TYPES:
    # Registered before the union, which captures each member's hook when configured.
    converter.register_unstructure_hook(
        _cls, make_dict_unstructure_fn(_cls, converter, _cattrs_omit_if_default=True)
    )


@converter.register_structure_hook
def _structure_input(data: Any, _: type[Input]) -> Input:
    source = data.get("source") if isinstance(data, dict) else None
    if source == "upload":
        return structure_fields(data, UploadInput)
    if source == "url":
        return structure_fields(data, UrlInput)
    raise ValueError("expected input.source to be 'upload' or 'url'")


def structure_fields(data: dict[str, Any], cls: type[T]) -> T:
    return converter.structure({k: v for k, v in data.items() if k != "source"}, cls)


# After the Input hook: the unions capture their members' hooks when configured.
configure_tagged_union(ClientMessage, converter, tag_name="type", tag_generator=_TAGS.__getitem__)
configure_tagged_union(ServerMessage, converter, tag_name="type", tag_generator=_TAGS.__getitem__)


def decode_client_message(text: str) -> ClientMessage:
    """Parse one text frame.

    Errors: ProtocolError(INVALID_JSON | UNKNOWN_MESSAGE_TYPE), ValidationError.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not valid JSON", code=ErrorCode.INVALID_JSON) from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object", code=ErrorCode.INVALID_JSON)
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        shown = "missing" if kind is None else repr(kind)[:40]
        raise ProtocolError(
            f"unknown message type {shown}; expected one of {', '.join(CLIENT_TYPES)}",
            code=ErrorCode.UNKNOWN_MESSAGE_TYPE,
        )
    message: ClientMessage = structure(data, ClientMessage)  # type: ignore[arg-type]
    return message


def job_id_of(text: str) -> str | None:
    """Best effort: the `job_id` of a frame that failed to decode, so its error can name it."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) and 0 < len(job_id) <= 128 else None


def encode(message: ServerMessage) -> str:
    data = converter.unstructure(message, unstructure_as=ServerMessage)
    return json.dumps(data, separators=(",", ":"), allow_nan=False)
