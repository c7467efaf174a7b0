"""Issue 11's findings, each reproduced against a real server: no client can hold what the
others need (worker slots, connections, memory, the event loop) past a configured bound.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.conftest import Media, StartServer
from tests.helpers import connect, ffmpeg, job_dirs, upgrade_request
from tests.jobs.test_lifecycle import THUMB, settle
from tests.wire.test_websocket import Raw, masked

TEXT, BINARY = 0x1, 0x2


@pytest.fixture(scope="module")
def long_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two minutes of tone as FLAC (small); as WAV it is ~10 MB, more than the socket
    buffers between a server and a client that has stopped reading."""
    path = tmp_path_factory.mktemp("tone") / "tone.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=120", "-ac", "1", str(path))
    return path


async def open_stalling(server: Endpoints) -> Raw:
    """A raw client with a tiny receive buffer, which will never read past the 101."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", server.port))
    raw = Raw(trio.SocketStream(sock))
    await raw.stream.send_all(upgrade_request(server.port))
    while b"\r\n\r\n" not in raw.buffer:
        await raw.fill(len(raw.buffer) + 1)
    return raw


async def send_job(
    raw: Raw, job_id: str, operation: str, options: dict[str, Any], path: Path
) -> None:
    start = {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": {"source": "upload"},
        "options": options,
    }
    header = json.dumps({"job_id": job_id, "filename": path.name}).encode()
    data = await trio.Path(path).read_bytes()
    upload = len(header).to_bytes(4, "big") + header + data
    await raw.stream.send_all(masked(TEXT, json.dumps(start).encode()) + masked(BINARY, upload))


async def stall_with_outputs(
    nursery: trio.Nursery, server: Endpoints, media: Media, long_tone: Path
) -> Raw:
    """A client whose results back up: a 10 MB WAV it never reads, then 40 thumbnails,
    whose messages fill its outbound queue (32) behind the WAV. Its sends go on in the
    background: the server stops reading it too, once its queue is full."""
    raw = await open_stalling(server)

    async def send_all() -> None:
        # The server may drop this client before it has sent everything: that is the point.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send_job(raw, "wav", "extract_audio", {"format": "wav"}, long_tone)
            for i in range(40):
                await send_job(raw, f"t{i}", "thumbnail", THUMB, media.clip)

    nursery.start_soon(send_all)
    return raw


async def test_a_client_that_stops_reading_does_not_hold_the_worker_slot(
    nursery: trio.Nursery, start_server: StartServer, media: Media, long_tone: Path
) -> None:
    """Its jobs' sends wait outside the slot: another client's job runs meanwhile, even
    with a send timeout far longer than the test (found: slots held for over 105 s)."""
    server = await start_server(jobs={"max_concurrent": 1}, server={"send_timeout_s": 600})
    with trio.fail_after(60):
        raw = await stall_with_outputs(nursery, server, media, long_tone)
        await trio.sleep(2)  # its results back up; one of its jobs is in the slot
        async with connect(server.url) as client:
            await client.start("victim", "thumbnail", THUMB)
            await client.upload("victim", media.clip)
            result = await client.collect("victim")
        assert result.final["type"] == "completed", result.final
        await raw.stream.aclose()


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    nursery: trio.Nursery, start_server: StartServer, media: Media, long_tone: Path, workdir: Path
) -> None:
    """Its connection is closed and its jobs cancelled once a write has waited
    `send_timeout_s`: nothing of it is left (connections, queue places, files)."""
    server = await start_server(server={"send_timeout_s": 1.0})
    with trio.fail_after(60):
        raw = await stall_with_outputs(nursery, server, media, long_tone)
        await settle(server, connections=1)
        started = trio.current_time()
        await settle(server, connections=0, queued=0, running=0)
        assert trio.current_time() - started < 30
        while job_dirs(workdir):  # noqa: ASYNC110 (no event for "a dir was removed")
            await trio.sleep(0.05)
        await raw.stream.aclose()


async def open_raw_from(server: Endpoints, address: str) -> Raw:
    """A raw client whose connection comes from `address` (another loopback address):
    with auth off, another client."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((address, 0))
    await sock.connect(("127.0.0.1", server.port))
    raw = Raw(trio.SocketStream(sock))
    await raw.stream.send_all(upgrade_request(server.port))
    while b"\r\n\r\n" not in raw.buffer:
        await raw.fill(len(raw.buffer) + 1)
    head, _, rest = bytes(raw.buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    raw.buffer = bytearray(rest)
    return raw


async def test_jobs_that_never_upload_do_not_make_the_server_busy_for_others(
    start_server: StartServer, media: Media
) -> None:
    """Found: 260 start_jobs with no upload (33 KiB) made the server answer BUSY to
    everyone for the 120 s input timeout. Now they count against their own client's
    quota (queued_jobs), not the shared queue."""
    server = await start_server(jobs={"queue_limit": 8})
    with trio.fail_after(60):
        greedy = await open_raw_from(server, "127.0.0.2")
        for i in range(260):
            start = {"type": "start_job", "job_id": f"g{i}", "operation": "thumbnail",
                     "input": {"source": "upload"}, "options": THUMB}  # fmt: skip
            await greedy.stream.send_all(masked(TEXT, json.dumps(start).encode()))
        codes: dict[str, int] = {}
        while sum(codes.values()) < 260:
            reply = await greedy.json()
            key = reply["type"] if reply["type"] == "ack" else reply["code"]
            codes[key] = codes.get(key, 0) + 1
        assert codes["ack"] == 16 and codes["QUOTA_EXCEEDED"] > 0, codes  # queued_jobs
        async with connect(server.url) as client:  # from 127.0.0.1: another client
            await client.start("victim", "thumbnail", THUMB)
            await client.upload("victim", media.clip)
            result = await client.collect("victim")
        assert result.final["type"] == "completed", result.final
        await greedy.stream.aclose()


async def test_a_clients_connections_past_its_quota_get_429(start_server: StartServer) -> None:
    server = await start_server(quotas={"connections": 2})
    with trio.fail_after(30):
        async with connect(server.url), connect(server.url):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(upgrade_request(server.port))
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 429 "), answer
            assert b"QUOTA_EXCEEDED" in answer and b"connections" in answer
        async with connect(server.url) as client:  # given back when they closed
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}
