"""A protocol v1 client that timestamps everything a job goes through.

One reader task per session routes frames by job_id, so one connection can carry many
jobs at once (the fairness scenario) and pings can interleave with jobs.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

MAX_MESSAGE = 1 << 30
PING = json.dumps({"type": "ping"})


def binary_frame(job_id: str, filename: str, payload: bytes) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": filename}).encode()
    return struct.pack(">I", len(header)) + header + payload


def frame_job_id(frame: bytes) -> str | None:
    try:
        (length,) = struct.unpack_from(">I", frame)
        header = json.loads(frame[4 : 4 + length])
    except (struct.error, ValueError):
        return None
    job_id = header.get("job_id") if isinstance(header, dict) else None
    return job_id if isinstance(job_id, str) else None


@attrs.define(eq=False)
class JobTrace:
    """When each step of one job was seen by the client (trio clock, seconds)."""

    job_id: str
    submitted: float
    uploaded: float | None = None
    acked: float | None = None
    queued: float | None = None
    running: float | None = None
    processed: float | None = None  # FFmpeg done (progress 100): its worker slot is free
    completed: float | None = None
    delivered: float | None = None
    output_bytes: int = 0
    error: str | None = None
    done: trio.Event = attrs.Factory(trio.Event)
    accepted: trio.Event = attrs.Factory(trio.Event)  # input received: queued, running or over

    @property
    def ok(self) -> bool:
        return self.error is None and self.delivered is not None

    @property
    def latency(self) -> float | None:
        return self.delivered - self.submitted if self.delivered is not None else None

    def fail(self, error: str) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()
        self.accepted.set()


@attrs.define(eq=False)
class Session:
    ws: WebSocketConnection
    jobs: dict[str, JobTrace] = attrs.Factory(dict)
    _pongs: deque[tuple[float, trio.MemorySendChannel[float]]] = attrs.Factory(deque)

    async def submit(
        self,
        job_id: str,
        operation: str,
        options: dict[str, Any],
        payload: bytes,
        filename: str,
    ) -> JobTrace:
        """Send start_job and the upload; the trace completes as the server answers."""
        trace = JobTrace(job_id, trio.current_time())
        self.jobs[job_id] = trace
        start = {
            "type": "start_job",
            "job_id": job_id,
            "operation": operation,
            "input": {"source": "upload"},
            "options": options,
        }
        try:
            await self.ws.send_message(json.dumps(start))
            await self.ws.send_message(binary_frame(job_id, filename, payload))
        except ConnectionClosed:
            trace.fail("connection closed while sending")
        trace.uploaded = trio.current_time()
        return trace

    async def run(
        self, job_id: str, operation: str, options: dict[str, Any], payload: bytes, filename: str
    ) -> JobTrace:
        trace = await self.submit(job_id, operation, options, payload, filename)
        await trace.done.wait()
        return trace

    async def ping(self) -> float:
        """One ping's round trip in seconds."""
        send, receive = trio.open_memory_channel[float](1)
        sent = trio.current_time()
        self._pongs.append((sent, send))
        await self.ws.send_message(PING)
        async with receive:
            return await receive.receive()

    async def read_forever(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                self._dispatch(message, trio.current_time())
        except ConnectionClosed:
            for trace in self.jobs.values():
                trace.fail("connection closed")

    def _dispatch(self, message: str | bytes, now: float) -> None:
        if isinstance(message, bytes):
            trace = self.jobs.get(frame_job_id(message) or "")
            if trace is not None:
                trace.output_bytes += len(message)
                trace.delivered = now
                trace.done.set()
                trace.accepted.set()
            return
        data = json.loads(message)
        kind = data.get("type")
        if kind == "pong":
            if self._pongs:
                sent, channel = self._pongs.popleft()
                channel.send_nowait(now - sent)
            return
        trace = self.jobs.get(data.get("job_id") or "")
        if trace is None:
            return
        if kind == "ack":
            trace.acked = now
        elif kind == "progress":
            if data.get("stage") == "queued":
                trace.queued = trace.queued or now
            elif trace.running is None:
                trace.running = now
            trace.accepted.set()
            if data.get("percentage", 0) >= 100:
                trace.processed = trace.processed or now
        elif kind == "completed":
            trace.completed = now
        elif kind == "error":
            trace.fail(f"{data.get('code')}: {data.get('message')}")


@asynccontextmanager
async def open_session(url: str) -> AsyncIterator[Session]:
    async with (
        open_websocket_url(
            url, max_message_size=MAX_MESSAGE, connect_timeout=30, disconnect_timeout=5
        ) as ws,
        trio.open_nursery() as nursery,
    ):
        session = Session(ws)
        nursery.start_soon(session.read_forever)
        yield session
        nursery.cancel_scope.cancel()
