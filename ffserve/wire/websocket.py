"""WebSocket connections on Trio, server side: the listener, the handshake, and a
connection whose messages arrive in pieces (`ffserve.wire.frames` says why not trio-websocket).

    serve_websocket(handler, host, port, ...)   trio.serve_listeners
      '- per TCP connection: a seat at the front door (`ffserve.wire.door`: counted from
         accept to close), a PROXY header from a trusted proxy when one is expected, the
         upgrade request (all within `handshake_timeout`, else 408), the door's checks
         (403 for a browser from an origin not allowed), then `handler(WebSocketRequest)`;
         the socket is closed when the handler returns. A request that is not an upgrade
         we take gets its HTTP error instead. A connection over a connection cap gets its
         503 as soon as that is known, without its request being read (`_turn_away`).

`WebSocket.receive()` returns the next `TextPart` or `BinaryPart`, answering pings on the
way, and reads the socket only when asked, so a reader that stops asking stops the
client (TCP back-pressure). It raises `ConnectionClosed` once the peer has closed (its
close frame is answered), broken the protocol (it is sent the close code), or vanished.
Sends from several tasks are serialised. Per connection, `ConnectionLimits` bound what a
client can make the server hold or do: a text message's bytes and a message's small
fragments (past them the connection is closed, 1009 or 1008), and messages read per
second (past the burst, reading waits for the rate: back-pressure, not an error).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import attrs
import trio

from ffserve.wire.address import client_address
from ffserve.wire.door import FrontDoor, Seat
from ffserve.wire.frames import (
    BINARY,
    CLOSE,
    NO_STATUS,
    NORMAL,
    PONG,
    TEXT,
    BinaryPart,
    Close,
    Event,
    FrameDecoder,
    LimitExceeded,
    Ping,
    ProtocolViolation,
    TextPart,
    close_payload,
    frame_header,
)
from ffserve.wire.handshake import Handshake, HandshakeFailed, UpgradeRequest, refusal
from ffserve.wire.pacing import TokenBucket
from ffserve.wire.proxy import ProxyHeaderInvalid, parse_proxy_header

log = logging.getLogger(__name__)
ABNORMAL = 1006  # no close frame: the peer vanished (never sent on the wire)
# Below this, header and payload go out in one write (a copy, cheaper than a syscall).
_JOIN_BELOW = 64 * 1024
# Read size of a file sent as a frame: memory per connection while it goes out.
_FILE_PIECE = 1024 * 1024
# Its own threads: a frame's reads hold the send lock (pongs, close frames wait behind
# them), so they must not queue behind long jobs in Trio's default thread limiter.
_FILE_READS = trio.CapacityLimiter(8)
# A binary message this large is paced by its bytes, not by the message rate.
_BULK = 64 * 1024
# How long a close frame may wait to go out (behind a send to a client that stopped reading).
CLOSE_SEND_S = 5.0
# How long a connection refused over a cap waits for its client to close, after its 503.
REFUSED_LINGER_S = 2.0


class ConnectionClosed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@attrs.frozen
class ConnectionLimits:
    """What one client may make its connection hold or do (None, inf: no limit)."""

    max_text_bytes: int | None = None
    max_small_fragments: int | None = None
    messages_per_s: float = math.inf
    message_burst: int = 100


# Told (event, reason) when the connection hits a limit, to audit it.
Report = Callable[[str, str], None]


def _ignore(event: str, reason: str) -> None:
    pass


class WebSocket:
    """The server end of one open WebSocket connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        receive_size: int,
        initial: bytes = b"",
        *,
        send_timeout: float = math.inf,
        limits: ConnectionLimits = ConnectionLimits(),
        report: Report = _ignore,
    ) -> None:
        self._stream = stream
        self._receive_size = receive_size
        # A client that takes nothing of a write for this long is dropped: its sends
        # must not hold the jobs (and their worker slots) that wait behind them.
        self._send_timeout = send_timeout
        self._decoder = FrameDecoder(
            max_text_bytes=limits.max_text_bytes, max_small_fragments=limits.max_small_fragments
        )
        self._decoder.feed(initial)
        self._bucket = (
            TokenBucket(limits.messages_per_s, limits.message_burst)
            if limits.messages_per_s < math.inf
            else None
        )
        self._report = report
        self._throttled = False
        self._in_message = False  # a data message is part-way through
        self._binary_size = 0  # of the binary message in progress
        self._send_lock = trio.StrictFIFOLock()
        self._close_sent = False
        self._closed: tuple[int, str] | None = None
        # A protocol error of the client's: the close frame it is owed, not yet sent.
        self.failure: tuple[int, str] | None = None

    async def receive(self) -> TextPart | BinaryPart:
        """The next piece of a message.

        Errors: ConnectionClosed. After a protocol error of the client's it is raised with
        `failure` set to the close frame owed, which the caller sends with `close` once
        the replies it owes the messages before the error are out."""
        while True:
            # One checkpoint per event: frames that carry nothing (empty fragments, pongs)
            # decode with no I/O, and a buffer full of them must not hold the event loop.
            # Here, before the decoder moves on, a cancellation loses no event.
            await trio.lowlevel.checkpoint()
            if self._closed is not None:
                raise ConnectionClosed(*self._closed)
            await self._pace()
            try:
                event = self._decoder.next_event()
            except ProtocolViolation as exc:
                if isinstance(exc, LimitExceeded):
                    self._report("connection_dropped", exc.reason)
                # Nothing more is read; the close frame it is owed goes out after the
                # replies owed to its earlier messages (`failure`; `close` sends it).
                self.failure = self._closed = (exc.close_code, exc.reason)
                continue
            if event is None:
                await self._receive_some()
                continue
            self._count(event)
            if isinstance(event, TextPart | BinaryPart):
                if not self._close_sent:  # else closing: drain until the peer's close
                    return event
            elif isinstance(event, Ping):
                if not self._close_sent:
                    await self._send_frame(PONG, event.payload)
            elif isinstance(event, Close):
                # Echo its code (RFC 6455 5.5.1); 1005 means "none" and is never sent.
                code = NORMAL if event.code == NO_STATUS else event.code
                await self._send_close(code, "")
                self._closed = (event.code, event.reason)
            # A Pong needs nothing: this server sends no pings of its own.

    async def _pace(self) -> None:
        """Without a token for the next message, wait for one before reading on: the
        client's sends then back up (TCP back-pressure) instead of the event loop."""
        if self._bucket is None:
            return
        wait = self._bucket.delay(trio.current_time())
        if wait > 0:
            if not self._throttled:  # once per connection: a flood is one event
                self._throttled = True
                self._report("rate_limited", "over the message rate")
            await trio.sleep(wait)

    def _count(self, event: Event) -> None:
        """A token for each control frame, text message (at its first part) and small
        binary message (at its end). A binary message of `_BULK` bytes or more costs
        none: its bytes, which TCP paces, cost more than its events, and chunked
        uploads must not be held to a message rate."""
        if isinstance(event, TextPart | BinaryPart):
            first = not self._in_message
            self._in_message = not event.last
            if isinstance(event, BinaryPart):
                self._binary_size = 0 if first else self._binary_size
                self._binary_size += len(event.data)
                if not event.last or self._binary_size >= _BULK:
                    return
            elif not first:
                return
        if self._bucket is not None:
            self._bucket.take(trio.current_time())

    async def send(self, message: str | bytes) -> None:
        """Send one message as one frame. Errors: ConnectionClosed."""
        if isinstance(message, str):
            await self._send_frame(TEXT, message.encode("utf-8"))
        else:
            await self._send_frame(BINARY, message)

    async def send_file(self, prefix: bytes, file: BinaryIO, size: int) -> None:
        """Send one binary message: `prefix`, then `size` bytes of `file`, read a piece
        at a time (in a thread) as the socket takes them. Errors: ConnectionClosed."""
        async with self._send_lock:
            self._check_open()
            try:
                await self._send_all(frame_header(BINARY, len(prefix) + size) + prefix)
                left = size
                while left:
                    try:
                        piece = await trio.to_thread.run_sync(
                            file.read, min(left, _FILE_PIECE), limiter=_FILE_READS
                        )
                    except OSError:
                        piece = b""
                    if not piece:
                        # The frame's length is on the wire: the connection cannot go on.
                        log.error("could not read the %d bytes left of a v1 output", left)
                        await self._stream.aclose()
                        raise self._lost()
                    await self._send_all(piece)
                    left -= len(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise self._lost() from None

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake; `receive` raises ConnectionClosed once the peer
        answers (data that arrives meanwhile is dropped). The caller bounds the wait."""
        await self._send_close(code, reason)

    async def _receive_some(self) -> None:
        try:
            data = await self._stream.receive_some(self._receive_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._lost()
        self._decoder.feed(data)

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Errors: ConnectionClosed when the client has not taken it within the send
        timeout (the stream is then aborted: a frame may be half on the wire)."""
        with trio.move_on_after(self._send_timeout) as late:
            await self._stream.send_all(data)
        if late.cancelled_caught:
            await trio.aclose_forcefully(self._stream)
            self._closed = self._closed or (ABNORMAL, "client stopped reading")
            raise self._lost()

    async def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        # Bounded: a client that has stopped reading must not hold the connection open.
        with trio.move_on_after(CLOSE_SEND_S), contextlib.suppress(ConnectionClosed):
            await self._send_frame(CLOSE, close_payload(code, reason))
        self._close_sent = True

    def _check_open(self) -> None:
        if self._close_sent:
            raise ConnectionClosed(*(self._closed or (NORMAL, "closing")))

    def _lost(self) -> ConnectionClosed:
        self._close_sent = True
        self._closed = self._closed or (ABNORMAL, "connection lost")
        return ConnectionClosed(*self._closed)

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        async with self._send_lock:
            self._check_open()
            header = frame_header(opcode, len(payload))
            try:
                if len(payload) < _JOIN_BELOW:
                    await self._send_all(header + payload)
                else:
                    await self._send_all(header)
                    await self._send_all(payload)
                if opcode == CLOSE:  # under the lock, so no frame can follow it out
                    self._close_sent = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise self._lost() from None


@attrs.define(eq=False)
class WebSocketRequest:
    """An upgrade request, to be accepted or rejected by the handler."""

    _stream: trio.abc.Stream
    _handshake: Handshake
    request: UpgradeRequest
    _receive_size: int
    # The client's address (a trusted proxy's word, else the peer's), for logs and caps.
    client: str = ""
    limits: ConnectionLimits = ConnectionLimits()
    _report: Report = _ignore

    async def accept(self, *, send_timeout: float = math.inf) -> WebSocket:
        """Errors: ConnectionClosed if the client has gone."""
        try:
            await self._stream.send_all(self._handshake.accept())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(ABNORMAL, "connection lost") from None
        return WebSocket(
            self._stream,
            self._receive_size,
            self._handshake.trailing,
            send_timeout=send_timeout,
            limits=self.limits,
            report=self._report,
        )

    def audit(self, event: str, reason: str) -> None:
        """Record that this connection was refused or dropped (the front door's audit)."""
        self._report(event, reason)

    async def reject(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._stream.send_all(refusal(status, headers, body))

    @property
    def peer(self) -> str:
        """The client's address as `host:port` (`[v6]:port`), or "-" if unknown."""
        socket = getattr(self._stream, "socket", None)
        try:
            address = socket.getpeername() if socket is not None else None
        except OSError:
            address = None
        if not isinstance(address, tuple):
            return "-"
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read_proxy_header(stream: trio.abc.Stream) -> tuple[str | None, bytes]:
    """The client a trusted proxy relays (None: its own), and the bytes after the header.

    Errors: HandshakeFailed (400) for anything but a valid PROXY header."""
    data = b""
    while True:
        # Small reads: the header is at most a few hundred bytes, and what follows it
        # is the client's request, which the handshake reads with its own bound.
        piece = await stream.receive_some(4096)
        if not piece:
            raise HandshakeFailed("connection closed before its PROXY header")
        data += piece
        try:
            header = parse_proxy_header(data)
        except ProxyHeaderInvalid as exc:
            raise HandshakeFailed(f"bad PROXY header: {exc}", refusal(400)) from None
        if header is not None:
            return header.client, data[header.length :]


async def _read_request(stream: trio.abc.Stream, receive_size: int, initial: bytes) -> Handshake:
    """A handshake whose request has been read whole. Errors: HandshakeFailed."""
    handshake = Handshake()
    if initial:
        handshake.receive_data(initial)
    while handshake.request() is None:
        handshake.receive_data(await stream.receive_some(receive_size))
    return handshake


def _peer(stream: trio.SocketStream) -> str:
    try:
        return client_address(stream.socket.getpeername()[0])
    except (OSError, ValueError, IndexError):
        return "unknown"


async def _turn_away(stream: trio.SocketStream, response: bytes, *, linger: bool) -> None:
    """Answer a connection refused over a cap, with no wait for (more of) its request:
    it is not counted, so nothing it does may keep it open for long.

    The 503 goes out at once (a new connection's socket buffer takes it whole). Closing
    with the client's request unread would reset the connection, and a reset can
    discard the 503 before the client reads it; so, if `linger`, the server closes its
    side and reads until the client closes too, for at most REFUSED_LINGER_S."""
    with trio.move_on_after(REFUSED_LINGER_S):
        await stream.send_all(response)
        if linger:
            await stream.send_eof()
            while await stream.receive_some(4096):
                pass


async def serve_websocket(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
    *,
    handler_nursery: trio.Nursery,
    handshake_timeout: float,
    receive_size: int,
    door: FrontDoor,
    limits: ConnectionLimits = ConnectionLimits(),
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept WebSocket connections until cancelled; `task_status.started(listeners)`.
    Each connection's `limits` apply once it is open."""
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def on_connection(stream: trio.SocketStream) -> None:
        async with stream:
            with door.seat(_peer(stream)) as seat:
                try:
                    await serve(stream, seat)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client went away during the handshake
                except Exception:
                    # One client's failure must never reach the listener's nursery.
                    log.exception("WebSocket connection ended by an unexpected error")

    async def enter(stream: trio.SocketStream, seat: Seat) -> WebSocketRequest:
        """Through the front door: who the client is, its request, the door's checks.

        Errors: HandshakeFailed."""
        door.turn_away(seat)  # over max_connections from accept: no read at all
        client, initial = None, b""
        if door.expects_proxy_header(seat):
            client, initial = await _read_proxy_header(stream)
        door.identify(seat, client)
        handshake = await _read_request(stream, receive_size, initial)
        request = handshake.request()
        assert request is not None
        door.admit(seat, request)

        def report(event: str, reason: str) -> None:
            door.audit.record(event, client=seat.client, subject=None, reason=reason)

        return WebSocketRequest(
            stream, handshake, request, receive_size, seat.client, limits, report
        )

    async def serve(stream: trio.SocketStream, seat: Seat) -> None:
        request: WebSocketRequest | None = None
        refused = b""
        with trio.move_on_after(handshake_timeout) as waiting:
            try:
                request = await enter(stream, seat)
            except HandshakeFailed as exc:
                refused = exc.response
        if waiting.cancelled_caught:
            refused = refusal(408)  # say why, rather than a silent close
        if request is not None:
            await handler(request)
        elif seat.refused:
            with door.refusing() as linger:
                await _turn_away(stream, refused, linger=linger)
        elif refused:
            # Bounded like a close frame: a client that does not read its answer must
            # not hold the connection.
            with trio.move_on_after(CLOSE_SEND_S):
                await stream.send_all(refused)

    await trio.serve_listeners(
        on_connection, listeners, handler_nursery=handler_nursery, task_status=task_status
    )
