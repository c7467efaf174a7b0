"""Property-based tests of the wire code that parses untrusted bytes: the frame decoder,
the opening handshake and the binary frame header.

Whatever the bytes, and however they are cut into reads, each must answer only with its
own clean failure (ProtocolViolation, HandshakeFailed, ProtocolError(INVALID_BINARY)),
hold no more than its bounds say, and not depend on where the reads were cut.
"""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any, Literal

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_name
from hypothesis import strategies as st

from ffserve.errors import ErrorCode, ProtocolError
from ffserve.wire.binary import MAX_HEADER_BYTES, decode_header, encode_header
from ffserve.wire.frames import (
    MAX_CONTROL_PAYLOAD,
    BinaryPart,
    Close,
    FrameDecoder,
    ProtocolViolation,
    TextPart,
)
from ffserve.wire.handshake import MAX_REQUEST_BYTES, Handshake, HandshakeFailed
from tests.wire.test_frames import masked, upgrade

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples in CI as here
)
# Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
MAX_FRAME_HEADER = 14


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at `cuts` (any integers, folded into range), in order."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- frames ------------------------------------------------------------------------------

keys = st.binary(min_size=4, max_size=4)


@st.composite
def conversations(draw: st.DrawFn) -> bytes:
    """What a client might send: messages in fragments cut anywhere (through UTF-8
    characters too) with control frames between them, maybe a close, maybe a byte
    flipped or a stray byte string spliced in."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        opcode = draw(st.sampled_from([0x1, 0x2]))
        payload = draw(st.text(max_size=60).map(str.encode) if opcode == 0x1 else st.binary())
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in itertools.pairwise([0, *cuts, len(payload)])]
        for n, piece in enumerate(pieces):
            if draw(st.booleans()):
                control = draw(st.sampled_from([0x9, 0xA]))
                out.append(masked(control, draw(st.binary(max_size=125)), key=draw(keys)))
            fin = n == len(pieces) - 1
            out.append(masked(opcode if n == 0 else 0x0, piece, fin=fin, key=draw(keys)))
    if draw(st.booleans()):
        out.append(masked(0x8, draw(st.sampled_from([b"", b"\x03\xe8bye", b"\x03"]))))
    data = bytearray(b"".join(out))
    if data and draw(st.integers(0, 3)) == 0:
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=16))
    return bytes(data)


client_bytes = st.one_of(conversations(), st.binary(max_size=2000))


def normalised(pieces: list[bytes]) -> tuple[list[object], int | None]:
    """Messages (joined) and control events in order, and the close code of a violation,
    checking on the way that the decoder never holds more than one header and one
    control frame's payload it has not handed on. Like the server, it feeds nothing
    after a Close: what follows one in the same read is dropped with the connection."""
    decoder = FrameDecoder()
    out: list[object] = []
    text, data = "", b""  # the message in progress
    try:
        for piece in pieces:
            decoder.feed(piece)
            for event in decoder.events():
                if isinstance(event, TextPart):
                    text += event.text
                    if event.last:
                        out.append(text)
                        text = ""
                elif isinstance(event, BinaryPart):
                    data += event.data
                    if event.last:
                        out.append(data)
                        data = b""
                else:
                    out.append(event)
            if out and isinstance(out[-1], Close):
                break
            held = len(decoder._buffer) - decoder._pos  # fed and not yet handed on
            assert held < MAX_FRAME_HEADER + MAX_CONTROL_PAYLOAD
    except ProtocolViolation as exc:
        assert exc.close_code in (1002, 1007)
        event_name(f"violation {exc.close_code}")
        return out, exc.close_code
    event_name(f"{len(out)} events" if len(out) < 3 else "3+ events")
    return out, None


@FUZZ
@given(client_bytes, st.lists(st.integers(min_value=0), max_size=30))
def test_frame_decoding_is_bounded_and_the_same_however_the_reads_are_cut(
    data: bytes, cuts: list[int]
) -> None:
    assert normalised(split(data, cuts)) == normalised([data])


# --- handshake ---------------------------------------------------------------------------

requests = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda request, at, junk: request[:at] + junk + request[at:],
        st.builds(lambda pad: upgrade(**{"X-Pad": "x" * pad}), st.integers(0, 20_000)),
        st.integers(min_value=0, max_value=300),
        st.binary(max_size=8),
    ),
    st.builds(upgrade).map(lambda request: request + b"\x81\x80\0\0\0\0"),
)


def parsed_response(response: bytes) -> h11.Response | h11.InformationalResponse:
    """`response` read by h11 as a client reads it: exactly one whole response."""
    client = h11.Connection(h11.CLIENT)
    upgrade_headers = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    client.send(h11.Request(method="GET", target="/", headers=upgrade_headers))
    client.receive_data(response)
    head = client.next_event()
    assert isinstance(head, h11.Response | h11.InformationalResponse), head
    if isinstance(head, h11.Response):  # its body, as long as its content-length says
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
        client.receive_data(b"")  # the server closes: nothing may come after it
        assert isinstance(client.next_event(), h11.ConnectionClosed)
    return head


@FUZZ
@given(requests, st.lists(st.integers(min_value=0), max_size=20))
def test_a_handshake_ends_in_a_request_or_a_well_formed_refusal(
    data: bytes, cuts: list[int]
) -> None:
    handshake, fed = Handshake(), 0
    try:
        for piece in split(data, cuts):
            fed += len(piece)
            handshake.receive_data(piece)
            if handshake.request() is not None:
                break
    except HandshakeFailed as failed:
        event_name(f"refused {failed.response[9:12].decode() or '(closed)'}")
        if failed.response:
            response = parsed_response(failed.response)
            assert response.status_code in (400, 405, 426, 431)
            assert (b"connection", b"close") in response.headers
        return
    if handshake.request() is None:  # waiting for more: never past the cap
        event_name("waiting")
        assert len(data) < MAX_REQUEST_BYTES
        return
    event_name("accepted")
    head = fed - len(handshake.trailing)  # the request's own bytes
    assert head <= MAX_REQUEST_BYTES
    assert data.startswith(b"GET ") and data[:head].endswith(b"\r\n\r\n")
    assert data[head:fed] == handshake.trailing
    assert parsed_response(handshake.accept()).status_code == 101


# --- binary frame header ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
headers = st.one_of(
    st.dictionaries(st.sampled_from(["job_id", "filename", "seq", "x"]), json_values),
    st.builds(
        lambda job_id, filename: {"job_id": job_id, "filename": filename},
        st.text(max_size=140),
        st.text(max_size=20),
    ),
    json_values,
)
binary_frames = st.one_of(
    st.binary(max_size=100),
    st.builds(
        lambda header, payload: struct.pack(">I", len(header)) + header + payload,
        headers.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=50),
    ),
    st.builds(
        lambda length, rest: struct.pack(">I", length) + rest,
        st.sampled_from([0, 1, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1, 2**32 - 1]),
        st.binary(max_size=50),
    ),
)


Decoded = tuple[str, str, dict[str, Any], bytes]


def outcome(start: bytes, *, complete: bool) -> Decoded | Literal["invalid"] | None:
    try:
        decoded = decode_header(start, complete=complete)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_BINARY
        return "invalid"
    if decoded is None:
        assert not complete
        return None
    return decoded.job_id, decoded.filename, decoded.extra, bytes(decoded.payload)


@FUZZ
@given(binary_frames, st.integers(min_value=0))
def test_a_binary_header_decodes_the_same_from_any_prefix(data: bytes, cut: int) -> None:
    """A prefix gives None (wait for more), the whole frame's header, or the same
    refusal: errors are reported as soon as the bytes show them, and only then."""
    whole = outcome(data, complete=True)
    early = outcome(data[: cut % (len(data) + 1)], complete=False)
    event_name("invalid" if whole == "invalid" else "decoded")
    if early == "invalid":
        assert whole == "invalid"
    elif early is not None:
        assert isinstance(whole, tuple)
        assert early[:3] == whole[:3] and whole[3].startswith(early[3])


@FUZZ
@given(st.text(min_size=1, max_size=128), st.text(max_size=50), st.binary(max_size=50))
def test_an_encoded_header_decodes_back(job_id: str, filename: str, payload: bytes) -> None:
    decoded = decode_header(encode_header(job_id, filename, seq=3) + payload, complete=True)
    assert decoded is not None
    assert (decoded.job_id, decoded.filename, decoded.extra) == (job_id, filename, {"seq": 3})
    assert bytes(decoded.payload) == payload
