"""Binary frames: `[u32 big-endian header length][UTF-8 JSON header][payload bytes]`.

Sans-I/O. The header is `{"job_id": str, "filename": str}` in protocol v1; extensions add
optional keys, which this module passes through for the caller to validate.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

from ffserve.errors import ErrorCode, ProtocolError

_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 * 1024


@attrs.frozen
class BinaryFrame:
    job_id: str
    filename: str
    payload: memoryview
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UploadPart:
    """A binary frame's payload, whole or a piece of it, on its way to its job."""

    # The frame's header, with this piece as its payload (empty for a chunk over the
    # limit, which arrives with its size but without its bytes).
    frame: BinaryFrame
    size: int  # the frame's payload bytes up to the end of this piece
    last: bool  # the frame ends here


def _invalid(message: str, job_id: str | None = None) -> ProtocolError:
    return ProtocolError(message, code=ErrorCode.INVALID_BINARY, job_id=job_id)


def decode_binary(frame: bytes | bytearray) -> BinaryFrame:
    """Split a binary frame into header and payload without copying the payload.

    Errors: ProtocolError(INVALID_BINARY) for a short frame, a header length that runs
    past the frame, a header that is not a JSON object, or a missing/mistyped job_id.
    """
    decoded = decode_header(frame, complete=True)
    assert decoded is not None
    return decoded


def decode_header(start: bytes | bytearray, *, complete: bool) -> BinaryFrame | None:
    """Decode the header at the start of a binary frame; `payload` is the rest of `start`.

    None while `start` is too short to hold the header and the frame may go on
    (`complete` false). Errors: as `decode_binary`, as soon as the bytes show them.
    """
    view = memoryview(start)
    if len(view) < _LENGTH.size:
        if not complete:
            return None
        raise _invalid(f"binary frame too short: {len(view)} bytes, need at least 4")
    (length,) = _LENGTH.unpack_from(view)
    if length == 0 or length > MAX_HEADER_BYTES:
        raise _invalid(f"binary frame header length {length} is not 1 to {MAX_HEADER_BYTES}")
    if _LENGTH.size + length > len(view):
        if not complete:
            return None
        raise _invalid(
            f"binary frame header length {length} does not fit a frame of {len(view)} bytes"
        )
    try:
        header = json.loads(bytes(view[_LENGTH.size : _LENGTH.size + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid("binary frame header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise _invalid("binary frame header must be a JSON object")
    job_id = header.pop("job_id", None)
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 128:
        raise _invalid("binary frame header needs a job_id string of 1 to 128 characters")
    filename = header.pop("filename", "")
    if not isinstance(filename, str):
        raise _invalid("binary frame header filename must be a string", job_id)
    return BinaryFrame(job_id, filename, view[_LENGTH.size + length :], header)


def encode_header(job_id: str, filename: str, **extra: Any) -> bytes:
    """The prefix of a binary frame; the caller appends the payload."""
    header = json.dumps(
        {"job_id": job_id, "filename": filename, **extra}, separators=(",", ":")
    ).encode()
    return _LENGTH.pack(len(header)) + header


def encode_binary(job_id: str, filename: str, payload: bytes) -> bytes:
    return encode_header(job_id, filename) + payload
