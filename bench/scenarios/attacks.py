"""The attacks of issue 11's security review, each run against a live server from another
loopback address than the bench's well-behaved client, for the `abuse` scenario.

Each attack is `async def attack(attacker, plan, *, task_status)`: it calls
`task_status.started()` once its harm is in place, then holds it until cancelled. Every
socket it opens belongs to its `Attacker`, which closes them all when the phase ends
(`open_attacker`). What the server did to the attacker (handshakes accepted or refused,
close codes, error codes) is counted in its `Observed`.
"""

from __future__ import annotations

import errno
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from bench.client import binary_frame
from bench.rawws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    TEXT,
    HandshakeRefused,
    RawWebSocket,
    masked,
    open_raw,
)
from bench.report import Scalar
from bench.scenarios.jobs import THUMBNAIL

CONNECT_TIMEOUT_S = 10.0
CLOSE_GRACE_S = 5.0
HANDSHAKES_AT_ONCE = 64
STALLED_RECEIVE_BUFFER = 4096
FLOOD_WRITE = 64 * 1024
FLOOD_MAX_BYTES = 8 << 30  # a bound on the fragment flood beside the phase's time


@attrs.frozen
class Plan:
    """What the attacks send and how many of each, from the bench's sizes and media."""

    clip: bytes  # a small video: thumbnails
    clip_name: str
    tone: bytes  # two minutes of tone as FLAC: a ~10 MB WAV once extracted
    tone_name: str
    large_jobs: int = 2
    small_jobs: int = 40
    unfinished_connections: int = 200
    unfinished_bytes: int = 60 * 1024
    flood_connections: int = 1000
    no_upload_jobs: int = 260


@attrs.define
class Observed:
    """What one attack saw of the server."""

    attempted: int = 0
    accepted: int = 0
    refused: Counter[str] = attrs.Factory(Counter)  # "HTTP 429", "ECONNREFUSED", "timeout"
    received: Counter[str] = attrs.Factory(Counter)  # replies: "ack", error codes, ...
    ended: Counter[str] = attrs.Factory(Counter)  # how accepted connections ended or stood
    sent_messages: int = 0
    sent_frames: int = 0
    sent_bytes: int = 0
    extra: dict[str, Scalar] = attrs.Factory(dict)

    def figures(self) -> dict[str, Scalar]:
        return {
            "connections_attempted": self.attempted,
            "connections_accepted": self.accepted,
            "refused": tally(self.refused),
            "replies": tally(self.received),
            "connections_at_end": tally(self.ended),
            "messages_sent": self.sent_messages,
            "frames_sent": self.sent_frames,
            "mib_sent": round(self.sent_bytes / (1 << 20), 1),
            **self.extra,
        }


def tally(counts: Counter[str]) -> str | None:
    """`Counter({"HTTP 429": 936})` as `HTTP 429 x936`, most common first."""
    return ", ".join(f"{key} x{n}" for key, n in counts.most_common()) or None


def reply_kind(payload: bytes) -> str:
    """An error's code, or a message's type."""
    try:
        data = json.loads(payload)
    except ValueError:
        return "not JSON"
    if not isinstance(data, dict):
        return "not an object"
    kind = data.get("code") if data.get("type") == "error" else data.get("type")
    return str(kind)


@attrs.define(eq=False)
class Attacker:
    """Connections from one address, all closed at the end (`open_attacker`)."""

    host: str
    port: int
    address: str
    observed: Observed
    sockets: list[RawWebSocket] = attrs.Factory(list)
    _ended: set[int] = attrs.Factory(set)  # ids of sockets the server has ended

    async def connect(self, *, receive_buffer: int | None = None) -> RawWebSocket | None:
        """A new connection, or None if refused (counted either way)."""
        self.observed.attempted += 1
        raw = None
        with trio.move_on_after(CONNECT_TIMEOUT_S):
            try:
                raw = await open_raw(
                    self.host, self.port, bind=self.address, receive_buffer=receive_buffer
                )
            except HandshakeRefused as exc:
                self.observed.refused[str(exc)] += 1
                return None
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                self.observed.refused[name] += 1
                return None
        if raw is None:
            self.observed.refused["timeout"] += 1
            return None
        self.observed.accepted += 1
        self.sockets.append(raw)
        return raw

    async def send(self, raw: RawWebSocket, data: bytes, *, frames: int = 1) -> bool:
        """False once the server has closed or reset the connection."""
        try:
            await raw.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self.observed.sent_frames += frames
        self.observed.sent_bytes += len(data)
        return True

    async def watch(self, raw: RawWebSocket) -> None:
        """Read the server's frames until it ends the connection: count replies and how
        it ended. Runs until cancelled if the server never does."""
        how = "EOF, no close frame"
        try:
            while (frame := await raw.next_frame()) is not None:
                if frame.opcode == CLOSE:
                    how = f"close {frame.close_code}"
                    break
                if frame.opcode == TEXT:
                    self.observed.received[reply_kind(frame.payload)] += 1
        except trio.BrokenResourceError:
            how = "reset"
        except trio.ClosedResourceError:
            return  # closed by us
        self._ended.add(id(raw))
        self.observed.ended[f"ended by server: {how}"] += 1

    async def swarm(
        self,
        count: int,
        then: Callable[[RawWebSocket], Awaitable[None]],
        holders: trio.Nursery,
    ) -> None:
        """Try `count` connections, HANDSHAKES_AT_ONCE at a time; each accepted one runs
        `then` in `holders`. Returns once every attempt has had its answer."""
        limiter = trio.CapacityLimiter(HANDSHAKES_AT_ONCE)

        async def attempt() -> None:
            async with limiter:
                raw = await self.connect()
            if raw is not None:
                holders.start_soon(then, raw)

        async with trio.open_nursery() as attempts:
            for _ in range(count):
                attempts.start_soon(attempt)

    async def close_all(self) -> None:
        """Note how each connection the server has not ended stands, then close them all."""

        async def note(raw: RawWebSocket) -> None:
            self.observed.ended[f"still {await raw.peek_state()}"] += 1

        with trio.move_on_after(CLOSE_GRACE_S, shield=True):
            async with trio.open_nursery() as nursery:
                for raw in self.sockets:
                    if id(raw) not in self._ended:
                        nursery.start_soon(note, raw)
            for raw in self.sockets:
                await trio.aclose_forcefully(raw.stream)
        self.sockets.clear()


@asynccontextmanager
async def open_attacker(
    host: str, port: int, address: str, observed: Observed
) -> AsyncIterator[Attacker]:
    attacker = Attacker(host, port, address, observed)
    try:
        yield attacker
    finally:
        await attacker.close_all()


class Attack(Protocol):
    async def __call__(
        self, attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
    ) -> None: ...


def start_job(job_id: str, operation: str, options: dict[str, Any]) -> bytes:
    message = {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": {"source": "upload"},
        "options": options,
    }
    return masked(TEXT, json.dumps(message).encode())


def upload_job(
    job_id: str, operation: str, options: dict[str, Any], name: str, data: bytes
) -> bytes:
    """start_job and its v1 upload (one binary frame), as one write."""
    upload = masked(BINARY, binary_frame(job_id, name, data))
    return start_job(job_id, operation, options) + upload


async def stalled_reader(
    attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
) -> None:
    """A client with a 4 KiB receive buffer that never reads: jobs with ~10 MB WAV
    results, then many thumbnails whose messages queue up behind them. Its sends go on
    until the server stops reading it too."""
    raw = await attacker.connect(receive_buffer=STALLED_RECEIVE_BUFFER)
    if raw is None:
        task_status.started()
        await trio.sleep_forever()
    jobs = [
        upload_job(f"wav-{i}", "extract_audio", {"format": "wav"}, plan.tone_name, plan.tone)
        for i in range(plan.large_jobs)
    ] + [
        upload_job(f"thumb-{i}", "thumbnail", THUMBNAIL, plan.clip_name, plan.clip)
        for i in range(plan.small_jobs)
    ]
    attacker.observed.extra["jobs_fully_sent"] = 0
    sent = 0
    for job in jobs:
        if not await attacker.send(raw, job, frames=2):
            break
        sent += 1
        attacker.observed.sent_messages += 2
        attacker.observed.extra["jobs_fully_sent"] = sent
        if sent == plan.large_jobs:
            task_status.started()
    if sent < plan.large_jobs:
        task_status.started()  # dropped before its harm was in place: that is a figure too
    await trio.sleep_forever()


async def unfinished_text(
    attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
) -> None:
    """Many connections, each with a ~60 KiB text frame with FIN=0 that never gets its
    final fragment."""
    prefix = b'{"type": "start_job", "job_id": "'
    frame = masked(TEXT, prefix + b"a" * (plan.unfinished_bytes - len(prefix)), fin=False)

    async def hold(raw: RawWebSocket) -> None:
        if await attacker.send(raw, frame):
            await attacker.watch(raw)

    async with trio.open_nursery() as holders:
        await attacker.swarm(plan.unfinished_connections, hold, holders)
        task_status.started()


async def connection_flood(
    attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
) -> None:
    """As many connections as the server takes (up to `flood_connections`), quickly, from
    one address, held silent."""
    async with trio.open_nursery() as holders:
        start = trio.current_time()
        await attacker.swarm(plan.flood_connections, attacker.watch, holders)
        attacker.observed.extra["open_s"] = round(trio.current_time() - start, 2)
        task_status.started()


async def fragment_flood(
    attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
) -> None:
    """One connection: a text frame with FIN=0, then empty continuation frames (FIN=0)
    without end, written 64 KiB at a time."""
    raw = await attacker.connect()
    task_status.started()
    if raw is None:
        await trio.sleep_forever()
    empty = masked(CONTINUATION, b"", fin=False)  # 6 bytes: header and mask key
    per_write = FLOOD_WRITE // len(empty)
    block = empty * per_write
    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker.watch, raw)
        # True once the server has closed the connection under the flood.
        attacker.observed.extra["server_ended_it"] = False
        sending = await attacker.send(raw, masked(TEXT, b'{"type": ', fin=False))
        for _ in range(FLOOD_MAX_BYTES // len(block)):
            if not sending:
                break
            sending = await attacker.send(raw, block, frames=per_write)
        attacker.observed.extra["server_ended_it"] = not sending


async def no_upload_jobs(
    attacker: Attacker, plan: Plan, *, task_status: trio.TaskStatus[None]
) -> None:
    """start_job messages for uploads that never come, on one connection."""
    raw = await attacker.connect()
    if raw is None:
        task_status.started()
        await trio.sleep_forever()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker.watch, raw)
        for i in range(plan.no_upload_jobs):
            if not await attacker.send(raw, start_job(f"never-{i}", "thumbnail", THUMBNAIL)):
                break
            attacker.observed.sent_messages += 1
        task_status.started()


ATTACKS: dict[str, Attack] = {
    "stalled_reader": stalled_reader,
    "unfinished_text": unfinished_text,
    "connection_flood": connection_flood,
    "fragment_flood": fragment_flood,
    "no_upload_jobs": no_upload_jobs,
}
