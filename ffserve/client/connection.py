"""`open_client(url, token=None)`: one WebSocket connection, any number of jobs on it.

    open_client
     |- reader task: each message to its job's channel, by `job_id`
     '- the caller's body: `await client.run(...)`, concurrently as often as it likes

The reader hands a job's messages over a small bounded channel, so a job that is slow
to write its outputs slows the connection down rather than buffering without bound.

Retries (ffserve.client.retry): opening the connection is tried again while it is
refused, and `run` tries a job again, each time on a new connection of its own, while
the server has surely not taken it (BUSY or SHUTTING_DOWN before its `ack`, a connection
lost before the upload began); never once the upload began.

Cancellation: leaving the block cancels the reader and closes the connection (the
server then cancels any job still on it). Errors: ConnectionFailed / Unauthorized when
the connection cannot be opened.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ffserve.client.errors import ConnectionFailed, Unauthorized, one_error
from ffserve.client.progress import JobProgress
from ffserve.client.result import Result
from ffserve.client.retry import DEFAULT_RETRY, NO_RETRY, Retry, retrying
from ffserve.errors import ProtocolError
from ffserve.wire.binary import decode_binary

# A message: a decoded text message, or a binary frame's header and payload.
Incoming = dict[str, Any] | tuple[dict[str, Any], bytes]
CHUNK_KB = 1024  # the server's default `[limits] chunk_kb`; a server with less says so
# The largest message the client accepts: a chunk of the largest `chunk_kb` a client
# can ask for (16 MiB) and its header.
MAX_MESSAGE = 16 * 1024 * 1024 + 64 * 1024
SEND_BOUND_S = 30.0  # one message (a chunk of at most 16 MiB) to a server that reads
CLOSE_BOUND_S = 5.0  # the closing handshake with a server that does not answer it


@attrs.define(eq=False)
class Client:
    """A connection to an ffserve server. Make it with `open_client`."""

    ws: WebSocketConnection
    url: str
    token: str | None = None
    chunk_kb: int = CHUNK_KB
    retry: Retry = DEFAULT_RETRY
    routes: dict[str, trio.MemorySendChannel[Incoming]] = attrs.Factory(dict)
    closed: str | None = None  # why the connection ended, once it has
    _ids: int = 0

    async def run(
        self,
        operation: str,
        inputs: Sequence[str | os.PathLike[str]],
        options: dict[str, Any] | None = None,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        progress: Callable[[JobProgress], None] | None = None,
        job_id: str | None = None,
        retry: Retry | None = None,
    ) -> Result:
        """Run one job to its end; see `ffserve.client.job.run_job`.

        The first attempt goes on this connection while it is open; a retry (by `retry`,
        default the client's) on a new connection of its own, closed after the job.
        Never retried once the upload began or the server acknowledged the job: sending
        it again then could run the work twice (ffserve.client.retry).
        """
        from ffserve.client.job import run_job

        if job_id is None:
            self._ids += 1
            job_id = f"job-{self._ids}"
        name = job_id
        args = (operation, list(inputs), options or {})
        out = Path.cwd() if out_dir is None else Path(out_dir)

        async def attempt(n: int) -> Result:
            if n == 0 and self.closed is None:
                return await run_job(self, name, *args, out_dir=out, progress=progress)
            async with open_client(
                self.url, self.token, chunk_kb=self.chunk_kb, retry=NO_RETRY
            ) as fresh:
                return await run_job(fresh, name, *args, out_dir=out, progress=progress)

        return await retrying(self.retry if retry is None else retry, attempt)

    async def send(self, message: dict[str, Any] | bytes) -> None:
        """Errors: ConnectionFailed once the connection is gone."""
        data = message if isinstance(message, bytes) else json.dumps(message)
        # A message cut off halfway (trio-websocket writes it with one send_all) would
        # leave the connection mid-frame for every job on it: once begun, it is finished,
        # shielded from cancellation but within a bound.
        try:
            with trio.move_on_after(SEND_BOUND_S, shield=True) as bound:
                await self.ws.send_message(data)
        except ConnectionClosed as exc:
            raise ConnectionFailed(f"connection closed: {exc.reason}") from None
        if bound.cancelled_caught:
            self.closed = "the server stopped reading"
            raise ConnectionFailed(self.closed)
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancel meanwhile, seen now

    def route(self, job_id: str) -> trio.MemoryReceiveChannel[Incoming]:
        """Start routing `job_id`'s messages to the returned channel (closed when the
        connection ends)."""
        send, receive = trio.open_memory_channel[Incoming](16)
        if self.closed is not None:
            send.close()
        self.routes[job_id] = send
        return receive

    def unroute(self, job_id: str) -> None:
        channel = self.routes.pop(job_id, None)
        if channel is not None:
            channel.close()

    async def serve_reader(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                message = await self.ws.get_message()
                for job_id, item in _addressed(message, self.routes):
                    channel = self.routes.get(job_id)
                    if channel is None:
                        continue  # a job this client has finished with
                    try:
                        await channel.send(item)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.routes.pop(job_id, None)
        except ConnectionClosed as exc:
            reason = exc.reason
            self.closed = (
                f"connection closed ({reason.code}: {reason.reason or ''})" if reason else None
            )
        finally:
            self.closed = self.closed or "connection closed"
            for channel in self.routes.values():
                channel.close()


def _addressed(message: str | bytes, routes: dict[str, Any]) -> list[tuple[str, Incoming]]:
    """Which jobs a message is for: its `job_id`; an error naming no job goes to all."""
    if isinstance(message, bytes):
        try:
            frame = decode_binary(message)
        except ProtocolError:
            return []
        header = {"job_id": frame.job_id, "filename": frame.filename, **frame.extra}
        return [(frame.job_id, (header, bytes(frame.payload)))]
    try:
        data = json.loads(message)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    job_id = data.get("job_id")
    if isinstance(job_id, str):
        return [(job_id, data)]
    if data.get("type") == "error":
        return [(name, data) for name in list(routes)]
    return []  # pong


@contextlib.asynccontextmanager
async def open_client(
    url: str,
    token: str | None = None,
    *,
    chunk_kb: int = CHUNK_KB,
    retry: Retry = DEFAULT_RETRY,
) -> AsyncIterator[Client]:
    """Connect to `url` (`ws://host:port/`), with `token` as `Authorization: Bearer`.

    `chunk_kb` is the upload chunk size to try first (a server that allows less says so,
    and the client goes down to its limit). `retry` bounds the attempts to connect and,
    unless `run` is given another, each job's (`Retry(retries=0)`: one attempt each).
    Errors: Unauthorized (HTTP 401), ConnectionFailed (refused, another HTTP status,
    handshake failure; after the retries when it is one that may pass).
    """
    async with contextlib.AsyncExitStack() as stack:

        async def attempt(_: int) -> WebSocketConnection:
            return await _connect(stack, url, token)

        ws = await retrying(retry, attempt)
        client = Client(ws, url, token, chunk_kb=chunk_kb, retry=retry)
        with one_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(client.serve_reader)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()


# Refusals that pass by themselves: the server is full (503: max_connections, or its
# address's share), or a balancer in front has no instance ready (502, 503, 504).
PASSING = frozenset({502, 503, 504})


async def _connect(
    stack: contextlib.AsyncExitStack, url: str, token: str | None
) -> WebSocketConnection:
    """One WebSocket connection, closed with `stack`. Errors: Unauthorized,
    ConnectionFailed (`retryable` when it was refused in a way that may pass: nothing
    listening, a reset, a timeout, HTTP 502/503/504)."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    error: ConnectionFailed
    try:
        return await stack.enter_async_context(
            open_websocket_url(
                url,
                extra_headers=headers,
                max_message_size=MAX_MESSAGE,
                disconnect_timeout=CLOSE_BOUND_S,
            )
        )
    except ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        cls = Unauthorized if exc.status_code == 401 else ConnectionFailed
        error = cls(f"HTTP {exc.status_code}: {body}", status=exc.status_code)
        error.retryable = exc.status_code in PASSING
        error.retry_after_s = _retry_after(exc.headers)
    except (HandshakeError, OSError, trio.TooSlowError) as exc:
        # trio-websocket's HandshakeError says nothing itself: why is in its cause.
        why = str(exc) or str(exc.__cause__ or exc.__context__ or "") or type(exc).__name__
        error = ConnectionFailed(f"cannot connect to {url}: {why}")
        error.retryable = True
    raise error


def _retry_after(headers: Sequence[tuple[bytes, bytes]] | None) -> float | None:
    """A `Retry-After` in delay-seconds (an HTTP date is not worth the parsing here)."""
    for name, value in headers or ():
        if name.lower() == b"retry-after" and value.strip().isdigit():
            return min(float(value), 3600.0)
    return None
