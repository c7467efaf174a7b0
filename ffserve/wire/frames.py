"""WebSocket frames, server side (RFC 6455 section 5), sans-I/O: bytes in, events out.

`FrameDecoder.feed(bytes)`, then `next_event()` until it returns None, gives `TextPart`,
`BinaryPart`, `Ping`, `Pong` and `Close`. A message's data is handed on as it arrives,
in the pieces it arrived in, each marked `last` at the message's end, so no message is
ever held whole: the caller decides what to keep (a chunk), what to stream to disk (a v1
upload) and what to drop (anything over a limit), and can answer a message that is too
big while it still arrives.

Why not wsproto, which trio-websocket runs on: it unmasks client data in Python at about
470 MB/s of one core here (the largest cost of an upload), and trio-websocket joins every
message whole before handing it on (a 200 MiB v1 upload was a 200 MiB join on the event
loop and a 446 MiB peak). Unmasking here is websockets' C `apply_mask`, at ~15 GB/s.

Errors: `ProtocolViolation(close_code, reason)` for anything RFC 6455 says must fail the
connection: unmasked, reserved-bit, unknown-opcode or oversized control frames, a broken
fragment sequence, invalid UTF-8 in text (1007) or in a close reason. `LimitExceeded`
(one of them) for a message past the decoder's limits: a text message over
`max_text_bytes` (1009), or one split into more than `max_small_fragments` frames of
under 1 KiB (1008): an endless message of empty fragments must end, and a text message
must not be held to any length, since no control message needs much.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Iterator

import attrs

try:
    from websockets.speedups import apply_mask
except ImportError:  # no C build for this platform: correct, just slower
    from websockets.utils import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset({CONTINUATION, TEXT, BINARY})
_CONTROL_OPCODES = frozenset({CLOSE, PING, PONG})
MAX_CONTROL_PAYLOAD = 125
# Close codes (RFC 6455 7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, NO_STATUS, INVALID_DATA, POLICY, TOO_BIG = (
    1000,
    1001,
    1002,
    1005,
    1007,
    1008,
    1009,
)
# Fragments of at least this size are real streaming, not counted against a message's
# `max_small_fragments`: a 256 MiB upload may come in as many 64 KiB frames as it likes.
SMALL_FRAGMENT = 1024
_LENGTH16 = struct.Struct(">H")
_LENGTH64 = struct.Struct(">Q")


@attrs.frozen
class TextPart:
    text: str
    last: bool


@attrs.frozen
class BinaryPart:
    data: bytes
    last: bool


@attrs.frozen
class Ping:
    payload: bytes


@attrs.frozen
class Pong:
    payload: bytes


@attrs.frozen
class Close:
    code: int  # NO_STATUS when the peer gave none
    reason: str


Event = TextPart | BinaryPart | Ping | Pong | Close


class ProtocolViolation(Exception):
    """The peer broke RFC 6455; the connection must be closed with `close_code`."""

    def __init__(self, reason: str, close_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class LimitExceeded(ProtocolViolation):
    """A message past one of the decoder's limits (not a breach of RFC 6455)."""


@attrs.define
class _Frame:
    """The header of the frame being read, and how much of its payload is left."""

    opcode: int
    fin: bool
    mask: bytes
    remaining: int
    offset: int = 0  # payload bytes already read, which turns the mask key


def _valid_close_code(code: int) -> bool:
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


class FrameDecoder:
    """Decodes what a client sends. Memory: what `feed` was given and not yet consumed,
    plus at most one control frame (125 bytes); never a whole data frame."""

    def __init__(
        self, *, max_text_bytes: int | None = None, max_small_fragments: int | None = None
    ) -> None:
        self._max_text = max_text_bytes
        self._max_small = max_small_fragments
        self._text_bytes = 0  # of the text message in progress
        self._small_fragments = 0  # of the message in progress
        self._buffer = bytearray()
        self._pos = 0
        self._frame: _Frame | None = None
        self._message: int | None = None  # TEXT or BINARY while a message is in progress
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._closed = False

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next event the bytes fed so far make, or None until more are fed.

        Errors: ProtocolViolation; the decoder is then unusable."""
        if self._closed:
            return None
        if self._frame is None:
            self._frame = self._read_header()
            if self._frame is None:
                return None
        return self._read_payload(self._frame)

    def events(self) -> Iterator[Event]:
        while (event := self.next_event()) is not None:
            yield event

    def _available(self) -> int:
        return len(self._buffer) - self._pos

    def _take(self, n: int) -> memoryview:
        view = memoryview(self._buffer)[self._pos : self._pos + n]
        self._pos += n
        return view

    def _read_header(self) -> _Frame | None:
        buffer, pos = self._buffer, self._pos
        if self._available() < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        fin, opcode, length = bool(first & 0x80), first & 0x0F, second & 0x7F
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4
        if first & 0x70:
            raise ProtocolViolation("reserved bits set, but no extension was agreed")
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise ProtocolViolation(f"unknown opcode {opcode:#x}")
        if not second & 0x80:
            raise ProtocolViolation("a client's frames must be masked")
        if opcode in _CONTROL_OPCODES and (not fin or length > MAX_CONTROL_PAYLOAD):
            raise ProtocolViolation("control frames must be unfragmented and <= 125 bytes")
        if opcode == CONTINUATION and self._message is None:
            raise ProtocolViolation("continuation frame outside a fragmented message")
        if opcode in (TEXT, BINARY) and self._message is not None:
            raise ProtocolViolation("new message before the previous one was finished")
        if self._available() < size:
            return None
        if length == 126:
            (length,) = _LENGTH16.unpack_from(buffer, pos + 2)
        elif length == 127:
            (length,) = _LENGTH64.unpack_from(buffer, pos + 2)
            if length >> 63:
                raise ProtocolViolation("frame length has its most significant bit set")
        if opcode in _DATA_OPCODES:
            self._check_limits(opcode, fin, length)
        mask = bytes(buffer[pos + size - 4 : pos + size])
        self._pos += size
        if opcode in (TEXT, BINARY):
            self._message = opcode
        return _Frame(opcode, fin, mask, length)

    def _check_limits(self, opcode: int, fin: bool, length: int) -> None:
        """Errors: LimitExceeded, from the frame's header, before its payload is read."""
        if opcode != CONTINUATION:
            self._text_bytes = self._small_fragments = 0
        if length < SMALL_FRAGMENT and not (fin and opcode != CONTINUATION):
            self._small_fragments += 1
            if self._max_small is not None and self._small_fragments > self._max_small:
                raise LimitExceeded(
                    f"message in over {self._max_small} fragments under 1 KiB", POLICY
                )
        if opcode == TEXT or (opcode == CONTINUATION and self._message == TEXT):
            self._text_bytes += length
            if self._max_text is not None and self._text_bytes > self._max_text:
                raise LimitExceeded(f"text message over {self._max_text} bytes", TOO_BIG)

    def _read_payload(self, frame: _Frame) -> Event | None:
        if frame.opcode in _CONTROL_OPCODES:
            if self._available() < frame.remaining:
                return None
            self._frame = None
            return self._control(frame.opcode, apply_mask(self._take(frame.remaining), frame.mask))
        n = min(frame.remaining, self._available())
        if n == 0 and frame.remaining:
            return None
        turn = frame.offset % 4
        data = apply_mask(self._take(n), frame.mask[turn:] + frame.mask[:turn]) if n else b""
        frame.offset += n
        frame.remaining -= n
        last = frame.fin and frame.remaining == 0
        if frame.remaining == 0:
            self._frame = None
        if self._message == TEXT:
            try:
                text = self._utf8.decode(data, final=last)
            except UnicodeDecodeError:
                raise ProtocolViolation("text message is not valid UTF-8", INVALID_DATA) from None
            if last:
                self._message = None
            return TextPart(text, last)
        if last:
            self._message = None
        return BinaryPart(data, last)

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        self._closed = True
        if not payload:
            return Close(NO_STATUS, "")
        if len(payload) == 1:
            raise ProtocolViolation("close frame with a one-byte payload")
        (code,) = _LENGTH16.unpack_from(payload)
        if not _valid_close_code(code):
            raise ProtocolViolation(f"close code {code} is not one a peer may send")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("close reason is not valid UTF-8", INVALID_DATA) from None
        return Close(code, reason)


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unfragmented, unmasked frame (what a server sends)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + _LENGTH16.pack(length)
    return bytes((first, 127)) + _LENGTH64.pack(length)


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload; the reason is cut (at a character) to fit 125 bytes."""
    encoded = reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return _LENGTH16.pack(code) + encoded.decode("utf-8", "ignore").encode("utf-8")
