"""A raw WebSocket client for the abuse scenario: the handshake written by hand, masked
frames built byte by byte, the server's frames read one at a time.

It sends what a client library never would (a message left unfinished, a flood of empty
fragments, requests it never reads the answers to), and it connects from a chosen loopback
address, so that the server's per-address quotas see it as another client than the bench's
well-behaved one. Frame building and parsing are pure; `open_raw` does the I/O.
"""

from __future__ import annotations

import base64
import os
import socket
import struct

import attrs
import trio

CONTINUATION, TEXT, BINARY, CLOSE = 0x0, 0x1, 0x2, 0x8
NO_STATUS = 1005  # a close frame without a code
MAX_RESPONSE_HEAD = 16 * 1024


class HandshakeRefused(Exception):
    """The server answered the upgrade with another status than 101 (0: it closed first)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}" if status else "closed during the handshake")
        self.status = status


def upgrade_request(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def response_status(head: bytes) -> int:
    """The status code of an HTTP response head (0 if it is not one)."""
    parts = head.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 masking, as one big-integer XOR (fast enough for the tens of KiB sent here)."""
    n = len(payload)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


def masked(opcode: int, payload: bytes, *, fin: bool = True, key: bytes | None = None) -> bytes:
    """One client frame (clients must mask every frame)."""
    key = os.urandom(4) if key is None else key
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        length = bytes([0x80 | 127]) + struct.pack(">Q", n)
    return bytes([(0x80 if fin else 0) | opcode]) + length + key + mask(payload, key)


@attrs.frozen
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        return struct.unpack(">H", self.payload[:2])[0] if len(self.payload) >= 2 else NO_STATUS


def parse_frame(buffer: bytearray) -> Frame | None:
    """Take one whole server (unmasked) frame off the front of `buffer`; None if incomplete."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    n, offset = second & 0x7F, 2
    if n == 126:
        if len(buffer) < 4:
            return None
        (n,) = struct.unpack_from(">H", buffer, 2)
        offset = 4
    elif n == 127:
        if len(buffer) < 10:
            return None
        (n,) = struct.unpack_from(">Q", buffer, 2)
        offset = 10
    if second & 0x80:  # a masked frame from a server is a protocol error; read it anyway
        offset += 4
    if len(buffer) < offset + n:
        return None
    payload = bytes(buffer[offset : offset + n])
    del buffer[: offset + n]
    return Frame(bool(first & 0x80), first & 0x0F, payload)


@attrs.define(eq=False)
class RawWebSocket:
    """One open connection, past its 101."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.Factory(bytearray)

    async def send(self, data: bytes) -> None:
        """Errors: trio.BrokenResourceError, trio.ClosedResourceError."""
        await self.stream.send_all(data)

    async def next_frame(self) -> Frame | None:
        """The server's next frame; None once it has closed the TCP connection.
        Errors: trio.BrokenResourceError when it was reset."""
        while (frame := parse_frame(self.buffer)) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        return frame

    async def peek_state(self) -> str:
        """Without reading: `reset`, `closed` (FIN, nothing left), `unread data` or `open`."""
        try:
            with trio.move_on_after(0.2):
                data = await self.stream.socket.recv(1, socket.MSG_PEEK)
                return "unread data" if data else "closed"
        except OSError:
            return "reset"
        return "open"

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_raw(
    host: str, port: int, *, bind: str, receive_buffer: int | None = None
) -> RawWebSocket:
    """Connect from `bind` and upgrade. A small `receive_buffer` (SO_RCVBUF, set before the
    connect so the window is small from the start) makes a client that stops reading stop
    the server's writes early.

    Errors: HandshakeRefused (the socket is closed), OSError from bind/connect.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.bind((bind, 0))
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
    except BaseException:
        sock.close()
        raise
    raw = RawWebSocket(stream)
    try:
        await stream.send_all(upgrade_request(host, port))
        while b"\r\n\r\n" not in raw.buffer and len(raw.buffer) < MAX_RESPONSE_HEAD:
            data = await stream.receive_some(4096)
            if not data:
                raise HandshakeRefused(0)
            raw.buffer += data
        head, _, rest = bytes(raw.buffer).partition(b"\r\n\r\n")
        status = response_status(head)
        if status != 101:
            raise HandshakeRefused(status)
        raw.buffer = bytearray(rest)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await trio.aclose_forcefully(stream)
        raise HandshakeRefused(0) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return raw
