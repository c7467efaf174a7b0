"""The WebSocket layer over real sockets, spoken by hand: handshakes good and bad, control
frames, the closing handshake, protocol violations, and fragmented messages."""

from __future__ import annotations

import itertools
import json
import os
import struct
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from ffserve.service.server import Endpoints
from ffserve.wire.frames import Event, FrameDecoder
from ffserve.wire.websocket import ConnectionClosed, WebSocket
from tests.conftest import Media, StartServer
from tests.helpers import binary_frame, connect, probe, streams, upgrade_request
from tests.streaming_client import start_message


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        length = bytes([0x80 | 127]) + struct.pack(">Q", n)
    data = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + length + key + data


@attrs.define
class Raw:
    """A client that sends raw bytes and reads the server's (unmasked) frames."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.Factory(bytearray)

    async def fill(self, n: int) -> None:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self.buffer += data

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        await self.fill(2)
        first, second = self.buffer[0], self.buffer[1]
        assert first & 0x80 and not second & 0x80, "server frames: final, unmasked"
        size, length = 2, second & 0x7F
        if length == 126:
            await self.fill(4)
            (length,), size = struct.unpack(">H", self.buffer[2:4]), 4
        elif length == 127:
            await self.fill(10)
            (length,), size = struct.unpack(">Q", self.buffer[2:10]), 10
        await self.fill(size + length)
        payload = bytes(self.buffer[size : size + length])
        del self.buffer[: size + length]
        return first & 0x0F, payload

    async def json(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == 0x1, opcode
        data: dict[str, Any] = json.loads(payload)
        return data

    async def at_eof(self) -> bool:
        return not self.buffer and await self.stream.receive_some(65536) == b""


async def open_raw(server: Endpoints) -> Raw:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(upgrade_request(server.port))
    raw = Raw(stream)
    while b"\r\n\r\n" not in raw.buffer:
        await raw.fill(len(raw.buffer) + 1)
    head, _, rest = bytes(raw.buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    raw.buffer = bytearray(rest)
    return raw


async def still_serving(server: Endpoints) -> None:
    async with connect(server.url) as client:
        await client.send({"type": "ping"})
        assert await client.recv_json() == {"type": "pong"}


async def test_ping_frames_are_answered_with_their_payload(server: Endpoints) -> None:
    with trio.fail_after(10):
        raw = await open_raw(server)
        await raw.stream.send_all(masked(0x9, b"are you there"))
        assert await raw.frame() == (0xA, b"are you there")
        await raw.stream.send_all(masked(0x1, b'{"type": "ping"}'))
        assert await raw.json() == {"type": "pong"}


async def test_a_client_close_is_echoed_then_the_connection_ends(server: Endpoints) -> None:
    with trio.fail_after(10):
        raw = await open_raw(server)
        await raw.stream.send_all(masked(0x8, struct.pack(">H", 1000) + b"done"))
        opcode, payload = await raw.frame()
        assert (opcode, struct.unpack(">H", payload[:2])[0]) == (0x8, 1000)
        assert await raw.at_eof()


async def test_a_protocol_violation_closes_with_1002_and_the_server_goes_on(
    server: Endpoints,
) -> None:
    with trio.fail_after(10):
        raw = await open_raw(server)
        await raw.stream.send_all(b"\x82\x03abc")  # unmasked: clients must mask
        opcode, payload = await raw.frame()
        assert (opcode, struct.unpack(">H", payload[:2])[0]) == (0x8, 1002)
        assert b"masked" in payload
        assert await raw.at_eof()
        await still_serving(server)


async def test_replies_owed_before_a_protocol_error_are_sent_before_its_close(
    server: Endpoints,
) -> None:
    """Found: the close frame for a protocol error went out ahead of the pongs owed to
    the valid messages before it, which were then dropped."""
    ping = masked(0x1, b'{"type": "ping"}')
    with trio.fail_after(10):
        raw = await open_raw(server)
        await raw.stream.send_all(ping * 20 + b"\x82\x03abc")  # then an unmasked frame
        frames = []
        while not frames or frames[-1][0] != 0x8:
            frames.append(await raw.frame())
        assert [json.loads(p) for _, p in frames[:-1]] == [{"type": "pong"}] * 20
        assert struct.unpack(">H", frames[-1][1][:2])[0] == 1002
        assert await raw.at_eof()
        await still_serving(server)


async def test_invalid_utf8_text_closes_with_1007(server: Endpoints) -> None:
    with trio.fail_after(10):
        raw = await open_raw(server)
        await raw.stream.send_all(masked(0x1, b'{"type": "\xff"}'))
        opcode, payload = await raw.frame()
        assert (opcode, struct.unpack(">H", payload[:2])[0]) == (0x8, 1007)


async def test_a_plain_http_request_gets_an_http_error(server: Endpoints) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while data := await stream.receive_some(65536):
            response += data
        assert response.startswith(b"HTTP/1.1 426 "), response
        assert b"sec-websocket-version: 13" in response
        await still_serving(server)


async def response_to(server: Endpoints, data: bytes) -> bytes:
    """What the server answers `data` (sent in one write) before it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(data)
    response = b""
    while chunk := await stream.receive_some(65536):
        response += chunk
    return response


async def test_a_request_over_16_kib_in_one_read_gets_431(server: Endpoints) -> None:
    """One write of 20 KiB is one read: h11 alone took it whole and answered 101."""
    request = upgrade_request(server.port)
    request = request.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"x" * 20480 + b"\r\n\r\n")
    with trio.fail_after(10):
        response = await response_to(server, request)
        assert response.startswith(b"HTTP/1.1 431 "), response[:100]
        await still_serving(server)


@pytest.mark.parametrize(
    "data",
    [
        masked(0x1, b'{"type": "ping"}'),  # a WebSocket frame with no handshake
        bytes.fromhex("16030100c4010000c00303") + bytes(32),  # a TLS ClientHello
    ],
    ids=["frame", "tls"],
)
async def test_bytes_that_are_not_http_get_400_at_once(
    start_server: StartServer, data: bytes
) -> None:
    server = await start_server(server={"handshake_timeout_s": 60})
    with trio.fail_after(10):  # not the handshake timeout
        assert (await response_to(server, data)).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half"])
async def test_a_handshake_past_its_timeout_gets_408(
    start_server: StartServer, sent: bytes
) -> None:
    server = await start_server(server={"handshake_timeout_s": 0.5})
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        start = trio.current_time()
        await stream.send_all(sent)
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
        assert 0.4 < trio.current_time() - start < 5
        assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response
        assert b"connection: close" in response


async def test_over_max_connections_the_handshake_gets_503(start_server: StartServer) -> None:
    server = await start_server(server={"max_connections": 1})
    with trio.fail_after(10):
        first = await open_raw(server)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade_request(server.port))
        response = b""
        while data := await stream.receive_some(65536):
            response += data
        assert response.startswith(b"HTTP/1.1 503 "), response
        assert response.endswith(b"too many connections")
        await first.stream.send_all(masked(0x1, b'{"type": "ping"}'))
        assert await first.json() == {"type": "pong"}


async def test_a_fragmented_v1_upload_with_pings_between_fragments(
    server: Endpoints, media: Media, tmp_path: Any
) -> None:
    """A client may split a message into fragments (browsers do for streams) and send
    control frames between them; the upload is the fragments joined."""
    data = binary_frame("f", "clip.mp4", media.clip.read_bytes())
    start = start_message("f", "thumbnail", {"timestamp": 1.0, "width": 320}, None)
    with trio.fail_after(30):
        raw = await open_raw(server)
        await raw.stream.send_all(masked(0x1, json.dumps(start).encode()))
        assert (await raw.json())["type"] == "ack"
        cuts = [0, 3, 20, len(data) // 2, len(data)]
        for n, (a, b) in enumerate(itertools.pairwise(cuts)):
            opcode = 0x2 if n == 0 else 0x0
            await raw.stream.send_all(masked(opcode, data[a:b], fin=b == len(data)))
            await raw.stream.send_all(masked(0x9, b"%d" % n))
        messages, output = [], b""
        while not output:
            opcode, payload = await raw.frame()
            if opcode == 0x1:
                messages.append(json.loads(payload))
            elif opcode == 0x2:
                output = payload
    assert [m["type"] for m in messages][-1] == "completed", messages
    (length,) = struct.unpack(">I", output[:4])
    image = tmp_path / "thumb.jpg"
    image.write_bytes(output[4 + length :])
    (video,) = streams(probe(image), "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("mjpeg", 320, 180)


async def test_a_message_in_one_character_fragments_and_empty_ones(server: Endpoints) -> None:
    with trio.fail_after(10):
        raw = await open_raw(server)
        text = b'{"type": "ping"}'
        frames = [masked(0x1, text[:1], fin=False)]
        for byte in text[1:]:
            frames += [masked(0x0, b"", fin=False), masked(0x0, bytes([byte]), fin=False)]
        frames.append(masked(0x0, b""))
        await raw.stream.send_all(b"".join(frames))
        assert await raw.json() == {"type": "pong"}


async def test_a_file_short_of_its_frame_length_ends_the_connection(tmp_path: Path) -> None:
    """The frame's length is on the wire before the file is read: if the file turns out
    short, nothing else may be sent on that connection."""
    client_end, server_end = trio.testing.memory_stream_pair()
    ws = WebSocket(server_end, 65536)
    path = tmp_path / "out.bin"
    path.write_bytes(b"x" * 100)
    with trio.fail_after(10):
        with path.open("rb") as f, pytest.raises(ConnectionClosed):
            await ws.send_file(b"head", f, 190)
        with pytest.raises(ConnectionClosed):
            await ws.send("after")
        received = b""
        while data := await client_end.receive_some(65536):
            received += data
    assert received[:2] == b"\x82\x7e" and received.endswith(b"x" * 100)


async def test_a_flood_of_empty_fragments_does_not_starve_other_connections(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty continuation frames decode to events with no I/O: a reader that yields only
    when its buffer runs dry would serve a whole read of them (seconds, with big reads)
    before any other client got a turn. (The caps that now end such a flood, small
    fragments per message and messages per second, are lifted here to see the reader's
    own fairness.)"""
    decoded = 0
    next_event = FrameDecoder.next_event

    def counted(decoder: FrameDecoder) -> Event | None:
        nonlocal decoded
        decoded += 1
        return next_event(decoder)

    monkeypatch.setattr(FrameDecoder, "next_event", counted)
    server = await start_server(
        server={"receive_buffer_kb": 4096, "max_messages_per_s": 1e9},
        limits={"max_small_fragments": 10**9},
    )
    empty = bytes([0x00, 0x80]) + bytes(4)  # FIN=0, continuation, masked, no payload
    block = empty * ((1 << 20) // len(empty))  # big writes make big reads
    backlog = trio.Event()  # set when more is sent than the server can read in one go

    async def flood(raw: Raw) -> None:
        await raw.stream.send_all(masked(0x1, b"", fin=False))
        for sent in itertools.count(1):
            await raw.stream.send_all(block)
            if sent == 2:
                backlog.set()

    with trio.fail_after(30):
        attacker = await open_raw(server)
        async with connect(server.url) as victim, trio.open_nursery() as nursery:
            nursery.start_soon(flood, attacker)
            await backlog.wait()
            before = decoded
            for _ in range(5):
                with trio.fail_after(0.5):  # unfair, one ping waited for seconds
                    await victim.send({"type": "ping"})
                    assert await victim.recv_json() == {"type": "pong"}
                await trio.sleep(0.05)
            assert decoded - before > 1000  # the flood was being read all along
            nursery.cancel_scope.cancel()
