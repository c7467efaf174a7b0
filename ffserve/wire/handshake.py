"""The WebSocket opening handshake (RFC 6455 section 4.2), sans-I/O, on h11.

`Handshake.receive_data(bytes)` until `request()` returns the client's upgrade request;
then `accept()` gives the 101 to send, or `refusal(status, body=...)` an HTTP error.
Whatever the client sent after its request (nothing, if it waited for the 101 as it
must) is `trailing`, the start of its frames. No extension or subprotocol is agreed: a
client that offers permessage-deflate sends plain frames when the answer does not name it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from http import HTTPStatus

import attrs
import h11

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_REQUEST_BYTES = 16 * 1024  # the whole request: request line and headers
# A request starts with its method, a token, then a space (RFC 9112 3; h11 refuses the
# blank lines RFC 9112 2.2 lets a server skip before it). The longest registered method
# has 17 characters, so the first 21 bytes tell HTTP from a TLS hello or a WebSocket
# frame, which h11 would hold, waiting for a line end, until the cap or the timeout.
_METHOD_MAX = 20
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_START = re.compile(rb"%s{1,%d} |%s{0,%d}\Z" % (_TCHAR, _METHOD_MAX, _TCHAR, _METHOD_MAX))
# Headers a request may carry once (RFC 6455 11.3.1, 11.3.5).
_SINGLE = frozenset({b"sec-websocket-key", b"sec-websocket-version"})


class HandshakeFailed(Exception):
    """Not a WebSocket upgrade we can take; `response` (maybe empty) is what to send."""

    def __init__(self, reason: str, response: bytes = b"") -> None:
        super().__init__(reason)
        self.response = response


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


@attrs.frozen
class UpgradeRequest:
    target: str
    headers: list[tuple[bytes, bytes]]
    key: bytes


@attrs.define
class Handshake:
    _h11: h11.Connection = attrs.Factory(
        lambda: h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    )
    _request: UpgradeRequest | None = None
    _complete: bool = False
    _start: bytes = b""  # the first bytes, until they show a method and a space
    _size: int = 0  # bytes given to h11, never past MAX_REQUEST_BYTES
    _beyond: bytes = b""  # what came after them: frames, if the request ended in time

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed what the client sent (b"" at end of stream).

        Errors: HandshakeFailed for a request that is not a valid upgrade (its
        `response` is the HTTP error to send) or a connection closed before one."""
        if not data:
            raise HandshakeFailed("connection closed during the handshake")
        if len(self._start) <= _METHOD_MAX:
            self._start = (self._start + bytes(data[: _METHOD_MAX + 1]))[: _METHOD_MAX + 1]
            if not _REQUEST_START.match(self._start):
                raise HandshakeFailed("not an HTTP request", refusal(400))
        # h11 bounds only a request it has not seen the end of: one read holding a
        # complete 64 KiB request would pass. So h11 gets no more than the cap.
        room = MAX_REQUEST_BYTES - self._size
        self._h11.receive_data(bytes(data[:room]))
        self._size += min(len(data), room)
        self._beyond = bytes(data[room:])
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                raise HandshakeFailed(f"bad HTTP request: {exc}", refusal(status)) from None
            if event is h11.PAUSED:  # the request is complete; h11 waits for our answer
                self._complete = True
                return
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                self._request = self._check(event)
            elif isinstance(event, h11.ConnectionClosed):
                raise HandshakeFailed("connection closed during the handshake")
        if self._size == MAX_REQUEST_BYTES:
            raise HandshakeFailed("request over 16 KiB", refusal(431))

    def request(self) -> UpgradeRequest | None:
        """The upgrade request, once it has been read whole."""
        return self._request if self._complete else None

    @property
    def trailing(self) -> bytes:
        return self._h11.trailing_data[0] + self._beyond

    def _check(self, event: h11.Request) -> UpgradeRequest:
        headers = [(name.lower(), value) for name, value in event.headers]
        fields: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in fields and name in _SINGLE:
                raise HandshakeFailed(f"repeated {name.decode()} header", refusal(400))
            # Repeated lines of a list header are one comma-separated list (RFC 9110 5.3).
            fields[name] = fields[name] + b", " + value if name in fields else value
        if event.method != b"GET":
            raise HandshakeFailed("the upgrade must be a GET", refusal(405))
        if (
            event.http_version != b"1.1"
            or b"content-length" in fields
            or (b"transfer-encoding" in fields)
        ):
            raise HandshakeFailed("the upgrade must be HTTP/1.1 with no body", refusal(400))
        if fields.get(b"sec-websocket-version") != b"13":
            answer = refusal(426, [(b"sec-websocket-version", b"13")])
            raise HandshakeFailed("not a WebSocket version 13 upgrade", answer)
        if b"websocket" not in _tokens(fields.get(b"upgrade", b"")) or b"upgrade" not in _tokens(
            fields.get(b"connection", b"")
        ):
            raise HandshakeFailed("not a WebSocket upgrade", refusal(400))
        key = fields.get(b"sec-websocket-key", b"")
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except binascii.Error:
            valid = False
        if not valid:
            raise HandshakeFailed("bad Sec-WebSocket-Key", refusal(400))
        return UpgradeRequest(event.target.decode("ascii", "replace"), headers, key)

    def accept(self) -> bytes:
        assert self._request is not None
        return (
            self._h11.send(
                h11.InformationalResponse(
                    status_code=101,
                    reason=b"Switching Protocols",
                    headers=[
                        (b"upgrade", b"websocket"),
                        (b"connection", b"Upgrade"),
                        (b"sec-websocket-accept", accept_key(self._request.key)),
                    ],
                )
            )
            or b""
        )


def refusal(
    status: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> bytes:
    """A whole HTTP response refusing the upgrade; the connection closes after it."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    fields = [
        *(headers or []),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    lines += [name + b": " + value for name, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
