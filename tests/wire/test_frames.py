"""The sans-I/O WebSocket layer: frame decoding and the opening handshake, against frames
and requests built independently here (and, for masking, by the `websockets` library)."""

from __future__ import annotations

import base64
import itertools
import os
import struct

import pytest

from ffserve.wire.frames import (
    BinaryPart,
    Close,
    Event,
    FrameDecoder,
    LimitExceeded,
    Ping,
    Pong,
    ProtocolViolation,
    TextPart,
    close_payload,
    frame_header,
)
from ffserve.wire.handshake import MAX_REQUEST_BYTES, Handshake, HandshakeFailed, accept_key


def masked(
    opcode: int, payload: bytes, *, fin: bool = True, key: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """A client frame, masked the slow obvious way."""
    n = len(payload)
    length = (
        bytes([0x80 | n])
        if n < 126
        else bytes([0x80 | 126]) + struct.pack(">H", n)
        if n < 1 << 16
        else bytes([0x80 | 127]) + struct.pack(">Q", n)
    )
    data = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + length + key + data


def decode(*pieces: bytes) -> list[Event]:
    decoder = FrameDecoder()
    events: list[Event] = []
    for piece in pieces:
        decoder.feed(piece)
        events += decoder.events()
    return events


def test_a_binary_message_arrives_in_the_pieces_fed_and_unmasked() -> None:
    payload = os.urandom(300_000)
    frame = masked(0x2, payload, key=os.urandom(4))
    # Cut at odd places: inside the header, and at offsets that are not multiples of 4.
    cuts = [0, 1, 5, 13, 70_001, 150_003, len(frame)]
    events = decode(*(frame[a:b] for a, b in itertools.pairwise(cuts)))
    assert all(isinstance(e, BinaryPart) for e in events)
    assert len(events) > 1
    assert b"".join(e.data for e in events if isinstance(e, BinaryPart)) == payload
    assert [e.last for e in events if isinstance(e, BinaryPart)] == [False] * (len(events) - 1) + [
        True
    ]


def test_fragmented_text_with_a_ping_between_fragments() -> None:
    text = "héllo wörld ✓"
    raw = text.encode()
    events = decode(
        masked(0x1, raw[:2], fin=False)  # cuts "é" in half
        + masked(0x9, b"hi")
        + masked(0x0, raw[2:9], fin=False)
        + masked(0x0, raw[9:])
    )
    assert events[1] == Ping(b"hi")
    parts = [e for e in events if isinstance(e, TextPart)]
    assert "".join(p.text for p in parts) == text
    assert [p.last for p in parts] == [False, False, True]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", Close(1005, "")),
        (struct.pack(">H", 1000) + b"bye", Close(1000, "bye")),
        (struct.pack(">H", 4321), Close(4321, "")),
    ],
)
def test_close_frames(payload: bytes, expected: Close) -> None:
    assert decode(masked(0x8, payload)) == [expected]


def test_nothing_is_decoded_after_a_close() -> None:
    assert decode(masked(0x8, b"") + masked(0x2, b"late")) == [Close(1005, "")]


def test_pong_and_empty_messages() -> None:
    assert decode(masked(0xA, b"x") + masked(0x2, b"") + masked(0x1, b"")) == [
        Pong(b"x"),
        BinaryPart(b"", True),
        TextPart("", True),
    ]


@pytest.mark.parametrize(
    ("data", "code", "why"),
    [
        (bytes([0x82, 0x03]) + b"abc", 1002, "masked"),
        (bytes([0xC2, 0x80]) + b"\0\0\0\0", 1002, "reserved"),
        (bytes([0x83, 0x80]) + b"\0\0\0\0", 1002, "opcode"),
        (masked(0x9, b"x" * 126), 1002, "control"),
        (masked(0x9, b"x", fin=False), 1002, "control"),
        (masked(0x0, b"x"), 1002, "continuation"),
        (masked(0x2, b"x", fin=False) + masked(0x2, b"y"), 1002, "previous"),
        (masked(0x1, b"\xff\xfe"), 1007, "UTF-8"),
        (masked(0x8, b"\x03"), 1002, "one-byte"),
        (masked(0x8, struct.pack(">H", 1005)), 1002, "1005"),
        (masked(0x8, struct.pack(">H", 1000) + b"\xff"), 1007, "UTF-8"),
        (bytes([0x82, 0xFF]) + b"\x80" + bytes(7) + b"\0\0\0\0", 1002, "significant"),
    ],
)
def test_protocol_violations(data: bytes, code: int, why: str) -> None:
    with pytest.raises(ProtocolViolation) as violation:
        decode(data)
    assert violation.value.close_code == code
    assert why in violation.value.reason


def test_unmasking_matches_the_websockets_library() -> None:
    from websockets.frames import Frame, Opcode

    payload = os.urandom(70_000)
    events = decode(Frame(Opcode.BINARY, payload).serialize(mask=True))
    assert b"".join(e.data for e in events if isinstance(e, BinaryPart)) == payload


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1 << 20])
def test_frame_header_lengths(length: int) -> None:
    header = frame_header(0x2, length)
    assert header[0] == 0x82
    if length < 126:
        assert header[1] == length and len(header) == 2
    elif length < 1 << 16:
        assert header[1] == 126 and struct.unpack(">H", header[2:])[0] == length
    else:
        assert header[1] == 127 and struct.unpack(">Q", header[2:])[0] == length


def test_close_payload_is_cut_at_a_character_to_fit() -> None:
    payload = close_payload(1001, "é" * 100)
    assert len(payload) <= 125
    assert struct.unpack(">H", payload[:2])[0] == 1001
    assert payload[2:].decode() == "é" * 61


# --- handshake ---------------------------------------------------------------------------


def upgrade(**overrides: str | None) -> bytes:
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update(overrides)  # type: ignore[arg-type]
    lines = [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return ("GET /jobs HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()


def test_accept_key_from_rfc_6455() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_request_in_pieces_is_accepted_and_what_follows_it_kept() -> None:
    request = upgrade(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    handshake = Handshake()
    handshake.receive_data(request[:20])
    assert handshake.request() is None
    handshake.receive_data(request[20:] + b"\x82\x80")
    upgrade_request = handshake.request()
    assert upgrade_request is not None and upgrade_request.target == "/jobs"
    response = handshake.accept()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert b"extensions" not in response  # nothing agreed, so no compressed frames
    assert handshake.trailing == b"\x82\x80"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade(**{"Sec-WebSocket-Version": "8"}), b"426"),
        (upgrade(**{"Sec-WebSocket-Version": None}), b"426"),
        (upgrade(Upgrade=None), b"400"),
        (upgrade(Connection="keep-alive"), b"400"),
        (upgrade(**{"Sec-WebSocket-Key": "short"}), b"400"),
        (upgrade().replace(b"GET", b"PUT", 1), b"405"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (upgrade().replace(b"HTTP/1.1", b"HTTP/1.0", 1), b"400"),
        (upgrade(**{"Content-Length": "4"}) + b"\x82\x80ab", b"400"),
        (upgrade().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: AAAA\r\n\r\n"), b"400"),
    ],
)
def test_bad_upgrades_get_an_http_error(request_bytes: bytes, status: bytes) -> None:
    with pytest.raises(HandshakeFailed) as failed:
        Handshake().receive_data(request_bytes)
    assert failed.value.response.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"connection: close" in failed.value.response


def test_a_connection_closed_mid_request_fails_without_an_answer() -> None:
    handshake = Handshake()
    handshake.receive_data(upgrade()[:30])
    with pytest.raises(HandshakeFailed) as failed:
        handshake.receive_data(b"")
    assert failed.value.response == b""


def test_repeated_list_header_lines_are_one_list() -> None:
    """`Connection: Upgrade` and `Connection: keep-alive` on two lines (RFC 9110 5.3)."""
    request = upgrade(Connection="Upgrade").replace(
        b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n"
    )
    handshake = Handshake()
    handshake.receive_data(request)
    assert handshake.request() is not None


def feed(handshake: Handshake, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        handshake.receive_data(data[start : start + piece])


@pytest.mark.parametrize("piece", [1 << 20, 4096, 1000])
def test_a_request_over_16_kib_gets_431_whatever_the_reads(piece: int) -> None:
    """h11 bounds only a request still incomplete: 64 KiB in one read used to pass."""
    request = upgrade(**{"X-Padding": "x" * (64 * 1024)})
    with pytest.raises(HandshakeFailed) as failed:
        feed(Handshake(), request, piece)
    assert failed.value.response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_a_request_of_16_kib_with_frames_after_it_is_accepted() -> None:
    """The cap counts the request, not the frames a client sent on its heels."""
    request = upgrade(**{"X-Padding": ""})
    request = request.replace(b"X-Padding: ", b"X-Padding: " + b"x" * (16384 - len(request)))
    assert len(request) == MAX_REQUEST_BYTES
    frames = masked(0x2, bytes(100_000))
    handshake = Handshake()
    handshake.receive_data(request + frames)
    assert handshake.request() is not None
    assert handshake.trailing == frames


@pytest.mark.parametrize(
    "start",
    [
        bytes.fromhex("160301020001") + bytes(60),  # a TLS ClientHello
        masked(0x1, b'{"type": "ping"}'),  # a WebSocket frame with no handshake
        bytes(range(128, 256)),  # binary with no line end
        b"GETTING-A-VERY-LONG-TOKEN-WITH-NO-SPACE",
        b"GET\t/ HTTP/1.1",
        b" GET / HTTP/1.1",
    ],
    ids=["tls", "frame", "binary", "long-token", "tab", "space"],
)
def test_bytes_that_are_not_http_are_refused_at_once(start: bytes) -> None:
    """h11 would wait for a line end (up to 16 KiB, or the handshake timeout)."""
    with pytest.raises(HandshakeFailed) as failed:
        Handshake().receive_data(start)
    assert failed.value.response.startswith(b"HTTP/1.1 400 ")


def test_a_request_a_byte_at_a_time_is_accepted() -> None:
    handshake = Handshake()
    feed(handshake, upgrade(), 1)
    assert handshake.request() is not None


# --- per-connection limits -----------------------------------------------------------


def test_a_text_message_over_its_byte_cap_fails_from_its_header() -> None:
    decoder = FrameDecoder(max_text_bytes=100)
    decoder.feed(masked(0x1, b"x" * 60, fin=False) + masked(0x0, b"y" * 40, fin=False))
    assert [type(e) for e in decoder.events()] == [TextPart, TextPart]
    # The next header alone (no payload sent) takes it past the cap.
    decoder.feed(masked(0x0, b"z", fin=True)[:6])
    with pytest.raises(LimitExceeded) as exc:
        decoder.next_event()
    assert exc.value.close_code == 1009


def test_the_text_cap_counts_bytes_not_characters_and_spares_binary() -> None:
    decoder = FrameDecoder(max_text_bytes=100)
    decoder.feed(masked(0x2, b"b" * 1000))
    decoder.feed(masked(0x1, "é".encode() * 50))  # 50 characters, 100 bytes: fits
    assert [type(e) for e in decoder.events()] == [BinaryPart, TextPart]
    decoder.feed(masked(0x1, "é".encode() * 51))
    with pytest.raises(LimitExceeded):
        decoder.next_event()


def test_small_fragments_are_capped_per_message_large_ones_are_not() -> None:
    decoder = FrameDecoder(max_small_fragments=3)
    # Many small messages, each one frame: not fragments.
    decoder.feed(masked(0x1, b"{}") * 10)
    # A message in large fragments: streaming, not counted.
    decoder.feed(masked(0x2, b"a" * 1024, fin=False) + masked(0x0, b"a" * 1024, fin=False) * 9)
    decoder.feed(masked(0x0, b"", fin=True))
    assert len(list(decoder.events())) == 21
    decoder.feed(masked(0x2, b"", fin=False) + masked(0x0, b"", fin=False) * 2)
    assert len(list(decoder.events())) == 3
    decoder.feed(masked(0x0, b"", fin=False))
    with pytest.raises(LimitExceeded) as exc:
        decoder.next_event()
    assert exc.value.close_code == 1008
