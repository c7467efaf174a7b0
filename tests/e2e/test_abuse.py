"""Issue 11's findings, each reproduced against a real server: no client can hold what the
others need (worker slots, connections, memory, the event loop) past a configured bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from ffserve.service.server import Endpoints
from ffserve.wire.proxy import V2_SIGNATURE
from tests.conftest import Media, StartServer
from tests.e2e.test_shutdown import run_server
from tests.helpers import connect, ffmpeg, job_dirs, upgrade_request
from tests.jobs.test_lifecycle import THUMB, settle, start_blocker
from tests.wire.test_websocket import Raw, masked, still_serving

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


# --- per-connection limits (issue 11, item 3) ----------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame masked with a zero key (so the payload is as is): fast for the big
    payloads below, where `masked` would XOR megabytes in Python."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + bytes(4) + payload


PING = masked(TEXT, b'{"type": "ping"}')


async def open_from(server: Endpoints, source: str = "127.0.0.1", data: bytes = b"") -> Raw:
    """A TCP connection to the server from loopback address `source` (another client)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", server.port))
    raw = Raw(trio.SocketStream(sock))
    if data:
        await raw.stream.send_all(data)
    return raw


def with_headers(request: bytes, *headers: bytes) -> bytes:
    return request.replace(b"\r\n\r\n", b"".join(b"\r\n" + h for h in headers) + b"\r\n\r\n")


async def upgrade(
    server: Endpoints, source: str = "127.0.0.1", *headers: bytes, before: bytes = b""
) -> tuple[int, Raw]:
    """Open a connection from `source` and send an upgrade request (after `before`, e.g.
    a PROXY header); its response's status, and the client (past the response's head)."""
    request = with_headers(upgrade_request(server.port), *headers)
    raw = await open_from(server, source, before + request)
    while b"\r\n\r\n" not in raw.buffer:
        data = await raw.stream.receive_some(65536)
        if not data:
            break
        raw.buffer += data
    head, _, rest = bytes(raw.buffer).partition(b"\r\n\r\n")
    raw.buffer = bytearray(rest)
    return (int(head.split()[1]) if head else 0), raw


async def closed_with(raw: Raw) -> tuple[int, str]:
    """Read to the server's close frame, skipping other frames: its code and reason."""
    while True:
        opcode, payload = await raw.frame()
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def audit_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "ffserve.audit"]
    return [line for line in lines if f" {event} " in line]


async def test_a_browser_from_an_origin_not_allowed_gets_403(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(security={"allowed_origins": ["https://app.example.com"]})
    with trio.fail_after(10):
        status, _ = await upgrade(server, "127.0.0.2", b"Origin: https://evil.example.com")
        assert status == 403
        status, allowed = await upgrade(server, "127.0.0.2", b"Origin: https://app.example.com")
        assert status == 101
        await allowed.stream.send_all(PING)
        assert await allowed.json() == {"type": "pong"}
        status, not_a_browser = await upgrade(server, "127.0.0.2")
        assert status == 101
        await not_a_browser.stream.send_all(PING)
        assert await not_a_browser.json() == {"type": "pong"}
    (line,) = audit_lines(caplog, "handshake_refused")
    assert "client=127.0.0.2" in line and "origin" in line


async def test_connections_per_address_are_capped_handshakes_included(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: one script took all 4,096 connections; no per-address cap, and a handshake
    in progress was not counted at all."""
    server = await start_server(server={"max_connections_per_ip": 3, "handshake_timeout_s": 30})
    with trio.fail_after(20):
        held = [(await upgrade(server, "127.0.0.2"))[1] for _ in range(2)]
        silent = await open_from(server, "127.0.0.2")  # a handshake that never ends
        await settle(server, connections=3)
        status, refused = await upgrade(server, "127.0.0.2")
        assert status == 503
        while data := await refused.stream.receive_some(65536):
            refused.buffer += data
        assert refused.buffer == b"too many connections from this address"
        status, other = await upgrade(server, "127.0.0.3")  # someone else: served
        assert status == 101
        await silent.stream.aclose()
        await settle(server, connections=3)
        status, again = await upgrade(server, "127.0.0.2")
        assert status == 101
        for raw in [*held, other, again]:
            await raw.stream.aclose()
        await settle(server, connections=0)
    (line,) = audit_lines(caplog, "handshake_refused")
    assert "client=127.0.0.2" in line and "too many connections from this address" in line


async def test_handshakes_in_progress_count_against_max_connections(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(server={"max_connections": 2, "handshake_timeout_s": 30})
    with trio.fail_after(20):
        silent = [await open_from(server, source) for source in ("127.0.0.2", "127.0.0.3")]
        await settle(server, connections=2)
        status, _ = await upgrade(server, "127.0.0.4")
        assert status == 503
        await silent[0].stream.aclose()
        await settle(server, connections=1)
        status, _ = await upgrade(server, "127.0.0.4")
        assert status == 101
    (line,) = audit_lines(caplog, "handshake_refused")
    assert "client=127.0.0.4" in line and "'too many connections'" in line


async def test_an_idle_connection_is_closed_with_1001(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: connections stayed open in silence as long as their client liked."""
    server = await start_server(server={"idle_timeout_s": 0.5})
    with trio.fail_after(20):
        status, raw = await upgrade(server)
        assert status == 101
        for _ in range(6):  # messages keep it open, past the timeout
            await trio.sleep(0.25)
            await raw.stream.send_all(PING)
            assert await raw.json() == {"type": "pong"}
        last = trio.current_time()
        assert await closed_with(raw) == (1001, "idle")
        assert 0.4 < trio.current_time() - last < 5
        await raw.stream.send_all(masked(0x8, (1001).to_bytes(2, "big")))
        assert await raw.at_eof()
        await settle(server, connections=0)
    (line,) = audit_lines(caplog, "connection_dropped")
    assert "client=127.0.0.1" in line and "'idle'" in line


async def test_a_connection_with_a_running_job_is_not_idle(
    start_server: StartServer, blocker: Path
) -> None:
    server = await start_server(server={"idle_timeout_s": 0.5})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            await start_blocker(client, blocker)
            await trio.sleep(2)  # four timeouts, no message: the job holds it open
            await client.send({"type": "ping"})
            while (await client.recv_json())["type"] != "pong":
                pass  # progress
            await client.send({"type": "cancel_job", "job_id": "blocker"})
            while (await client.recv_json())["type"] != "error":
                pass
            ended = trio.current_time()
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.reason.code == 1001
            assert trio.current_time() - ended < 5


def rss() -> int:
    """This process's resident memory in bytes (the test server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def pong_or_close(raw: Raw) -> bool:
    """True if the server answered a ping; False if it closed the connection instead."""
    with contextlib.suppress(AssertionError, trio.BrokenResourceError):
        while True:
            opcode, _ = await raw.frame()
            if opcode == 0xA:
                return True
            if opcode == 0x8:
                return False
    return False


async def test_unfinished_text_messages_hold_little_memory(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: a text message never finished cost 4.1-4.7 MiB of RSS per connection
    (1,500 connections: 1.0 -> 7.3 GiB). Now 200 connections each holding 60 KiB of an
    unfinished text message stay open, and one that goes on past 64 KiB is closed
    (1009) instead of buffered: the server's memory grows by far less than 64 MiB."""
    server = await start_server(
        server={"max_connections_per_ip": 1000}, quotas={"connections": 1000}
    )
    clients = 200
    with trio.fail_after(120):
        before = rss()
        raws = [(await upgrade(server))[1] for _ in range(clients)]
        for raw in raws:
            await raw.stream.send_all(frame(TEXT, b"x" * 60 * 1024, fin=False) + masked(0x9, b""))
        assert [await pong_or_close(raw) for raw in raws] == [True] * clients  # held, open
        assert rss() - before < 64 * 1024 * 1024
        # A megabyte more of the same message, in pieces, as an endless message comes.
        for raw in raws:
            with contextlib.suppress(trio.BrokenResourceError):
                for _ in range(4):
                    await raw.stream.send_all(frame(0x0, "é".encode() * 128 * 1024, fin=False))
                await raw.stream.send_all(masked(0x9, b""))
        answered = [await pong_or_close(raw) for raw in raws]
        grown = rss() - before
        assert grown < 64 * 1024 * 1024, f"{grown / 2**20:.0f} MiB"
        assert not any(answered)  # each was closed, not kept reading
        for raw in raws:
            await raw.stream.aclose()
        await settle(server, connections=0)
    # Each drop is audited once (the audit log's own rate limit counts the excess).
    assert 0 < len(audit_lines(caplog, "connection_dropped")) <= clients


async def test_a_text_message_over_the_cap_closes_with_1009_and_others_go_on(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(limits={"max_text_kb": 4})
    with trio.fail_after(20):
        status, raw = await upgrade(server)
        assert status == 101
        await raw.stream.send_all(frame(TEXT, b"x" * 4096, fin=False))
        await raw.stream.send_all(frame(0x0, b"y", fin=False))  # byte 4097
        code, reason = await closed_with(raw)
        assert (code, reason) == (1009, "text message over 4096 bytes")
        await still_serving(server)
        status, fits = await upgrade(server)  # exactly the cap is fine
        assert status == 101
        text = b'{"type": "ping", "x": "' + b"x" * (4096 - 26) + b'"}'
        await fits.stream.send_all(frame(TEXT, text[:4096]))
        assert (await fits.json())["code"] == "VALIDATION_ERROR"
    (line,) = audit_lines(caplog, "connection_dropped")
    assert "text message over 4096 bytes" in line


async def test_an_endless_message_of_empty_fragments_is_closed(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(server={"max_messages_per_s": 1e9})
    empty = frame(0x0, b"", fin=False)
    with trio.fail_after(20):
        for opcode in (TEXT, BINARY):
            status, raw = await upgrade(server)
            assert status == 101

            async def flood(raw: Raw = raw, opcode: int = opcode) -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await raw.stream.send_all(frame(opcode, b"", fin=False))
                    while True:
                        await raw.stream.send_all(empty * 10000)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                code, reason = await closed_with(raw)
                nursery.cancel_scope.cancel()
            assert code == 1008 and "fragments" in reason
            await still_serving(server)
    assert len(audit_lines(caplog, "connection_dropped")) == 2


async def test_a_flood_of_pings_is_answered_at_the_message_rate(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection's flood is read at `max_messages_per_s` (after its burst), while
    another client's ping is answered at once."""
    server = await start_server(server={"max_messages_per_s": 20, "message_burst": 10})
    answered = 0

    async def count_pongs(raw: Raw) -> None:
        nonlocal answered
        while True:
            assert await raw.json() == {"type": "pong"}
            answered += 1

    with trio.fail_after(30):
        status, flooder = await upgrade(server, "127.0.0.2")
        assert status == 101
        async with connect(server.url) as victim, trio.open_nursery() as nursery:
            nursery.start_soon(count_pongs, flooder)
            await flooder.stream.send_all(PING * 300)
            start = trio.current_time()
            for _ in range(5):
                with trio.fail_after(1):  # not behind the flood
                    await victim.send({"type": "ping"})
                    assert await victim.recv_json() == {"type": "pong"}
                await trio.sleep(0.3)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        # About 10 + 20 per second; generous both ways.
        assert 10 <= answered <= 10 + 20 * elapsed * 1.5 + 10, (answered, elapsed)
    (line,) = audit_lines(caplog, "rate_limited")
    assert "client=127.0.0.2" in line


def proxy_v2(source: str) -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + bytes([0xC7, 0x38, 0, 80])
    return V2_SIGNATURE + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body


async def test_behind_a_proxy_the_proxy_protocol_names_the_client(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-address cap and the audit log see the client HAProxy relays (send-proxy,
    send-proxy-v2), not HAProxy itself; only a trusted peer's header is believed."""
    server = await start_server(
        server={
            "trusted_proxies": ["127.0.0.2"],
            "proxy_protocol": True,
            "max_connections_per_ip": 1,
        }
    )
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n"
    with trio.fail_after(20):
        assert (await upgrade(server, "127.0.0.2", before=v1))[0] == 101
        assert (await upgrade(server, "127.0.0.2", before=v1))[0] == 503
        status, other = await upgrade(server, "127.0.0.2", before=proxy_v2("203.0.113.8"))
        assert status == 101
        await other.stream.send_all(PING)
        assert await other.json() == {"type": "pong"}
        assert (await upgrade(server, "127.0.0.2", before=proxy_v2("203.0.113.8")))[0] == 503
        # A trusted peer that sends no header (or garbage) is refused.
        assert (await upgrade(server, "127.0.0.2"))[0] == 400
        assert (await upgrade(server, "127.0.0.2", before=b"PROXY TCP4 x\r\n"))[0] == 400
        # From anyone else a PROXY line is just not HTTP.
        assert (await upgrade(server, "127.0.0.3", before=v1))[0] == 400
    refusals = audit_lines(caplog, "handshake_refused")
    assert [line.split()[2] for line in refusals] == ["client=203.0.113.7", "client=203.0.113.8"]


async def test_behind_a_proxy_an_ipv4_client_is_one_client_however_it_is_written(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy may relay an IPv4 client as IPv4-mapped IPv6 (PROXY TCP6, X-Forwarded-For):
    the per-address cap and the audit log still see one client, as IPv4."""
    server = await start_server(
        server={
            "trusted_proxies": ["127.0.0.2"],
            "proxy_protocol": True,
            "max_connections_per_ip": 1,
        }
    )
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n"
    mapped = b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:127.0.0.1 51000 80\r\n"
    with trio.fail_after(20):
        assert (await upgrade(server, "127.0.0.2", before=v1))[0] == 101
        assert (await upgrade(server, "127.0.0.2", before=mapped))[0] == 503
    (line,) = audit_lines(caplog, "handshake_refused")
    assert "client=203.0.113.7 " in line
    forwarding = await start_server(
        server={"trusted_proxies": ["127.0.0.2"], "max_connections_per_ip": 1}
    )
    with trio.fail_after(20):
        plain = b"X-Forwarded-For: 203.0.113.9"
        assert (await upgrade(forwarding, "127.0.0.2", plain))[0] == 101
        mapped_xff = b"X-Forwarded-For: ::ffff:203.0.113.9"
        assert (await upgrade(forwarding, "127.0.0.2", mapped_xff))[0] == 503


async def test_behind_a_proxy_x_forwarded_for_names_the_client(start_server: StartServer) -> None:
    server = await start_server(
        server={"trusted_proxies": ["127.0.0.2"], "max_connections_per_ip": 1}
    )
    with trio.fail_after(20):
        # The client wrote the left address itself; the proxy appended the right one.
        spoofed = b"X-Forwarded-For: 127.0.0.3, 203.0.113.9"
        assert (await upgrade(server, "127.0.0.2", spoofed))[0] == 101
        forwarded = b"X-Forwarded-For: 203.0.113.9"
        assert (await upgrade(server, "127.0.0.2", forwarded))[0] == 503
        assert (await upgrade(server, "127.0.0.2", b"X-Forwarded-For: 203.0.113.10"))[0] == 101
        # Not from a trusted proxy: the header is ignored, the peer is the client.
        assert (await upgrade(server, "127.0.0.3", forwarded))[0] == 101
        assert (await upgrade(server, "127.0.0.3", b"X-Forwarded-For: 203.0.113.11"))[0] == 503


# --- refused connections (review of issue 11) -----------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def answer_of(raw: Raw) -> bytes:
    """Everything the server sends before it closes."""
    while data := await raw.stream.receive_some(65536):
        raw.buffer += data
    return bytes(raw.buffer)


@pytest.mark.parametrize("cap", ["max_connections", "max_connections_per_ip"])
async def test_connections_over_a_cap_are_answered_at_once_and_hold_no_descriptors(
    tmp_path: Path, cap: str
) -> None:
    """Found: a connection over a cap waited `handshake_timeout_s` for its request
    before its 503, counted against nothing: a client that sent nothing held a
    descriptor that long (200 held at once), so enough of them exhaust the server's.
    Now each gets its 503 at once, unread, and the refused ones still open are at most
    `max_refused_connections`. The handshake timeout here is longer than the test."""
    settings = {
        f"FFSERVE_SERVER_{cap.upper()}": "4",
        "FFSERVE_SERVER_HANDSHAKE_TIMEOUT_S": "30",
        "FFSERVE_SERVER_MAX_REFUSED_CONNECTIONS": "16",
        "FFSERVE_QUOTAS_CONNECTIONS": "100",
    }
    async with run_server(tmp_path, **settings) as process:
        pid = process.process.pid
        port = int(process.url.rsplit(":", 1)[1].strip("/"))
        server = Endpoints("127.0.0.1", port, process.http_port)
        with trio.fail_after(20):
            held = [(await upgrade(server))[1] for _ in range(4)]
            before = open_fds(pid)
            silent = [await open_from(server) for _ in range(200)]
            highest = before
            for raw in silent:
                assert (await answer_of(raw)).startswith(b"HTTP/1.1 503 ")
                highest = max(highest, open_fds(pid))
            # Slack: a connection accepted but not yet answered, the listener's own.
            assert highest <= before + 16 + 8, (before, highest)
            # The 16 that linger give up on clients that never close.
            while open_fds(pid) > before:  # noqa: ASYNC110 (no event for "an fd closed")
                await trio.sleep(0.1)
            for raw in [*held, *silent]:
                await raw.stream.aclose()
            status, again = await upgrade(server)
            assert status == 101
            await again.stream.send_all(PING)
            assert await again.json() == {"type": "pong"}
    refusals = [line for line in process.log if " handshake_refused " in line]
    assert refusals and all("too many connections" in line for line in refusals)


async def test_a_refused_client_reads_its_503_whenever_its_request_comes(
    start_server: StartServer,
) -> None:
    """The 503 goes out before the request is read, which comes with it or after it.
    The server then waits for the client to close instead of closing on the unread
    request: that would reset the connection, and the client would see a reset, not
    its 503 (found with `max_refused_connections = 0`, which does just that)."""
    server = await start_server(server={"max_connections": 1, "handshake_timeout_s": 30})
    with trio.fail_after(20):
        status, held = await upgrade(server)
        assert status == 101
        for delay in [0.0] * 10 + [0.01 * n for n in range(10)]:
            refused = await open_from(server)
            await trio.sleep(delay)
            await refused.stream.send_all(upgrade_request(server.port))
            answer = await answer_of(refused)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert answer.endswith(b"too many connections"), answer
            await refused.stream.aclose()
        await held.stream.aclose()


async def test_out_of_descriptors_the_server_waits_quietly_and_recovers(tmp_path: Path) -> None:
    """Past its open-files limit accept fails (EMFILE): Trio's accept loop retries every
    0.1 s, and new connections wait in the listen backlog. The server must not spin,
    crash, or log a traceback ten times a second (it did); it logs the shortage once
    and serves again once descriptors are free. Its limit is lowered here to 20 above
    what it holds, and 60 clients connect."""
    async with run_server(tmp_path, FFSERVE_SERVER_HANDSHAKE_TIMEOUT_S="30") as process:
        pid = process.process.pid
        port = int(process.url.rsplit(":", 1)[1].strip("/"))
        server = Endpoints("127.0.0.1", port, process.http_port)
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + 20, hard))
        with trio.fail_after(30):
            clients = [await open_from(server) for _ in range(60)]
            while not any("EMFILE" in line for line in process.log):  # noqa: ASYNC110
                await trio.sleep(0.05)
            await trio.sleep(2)  # some twenty retries
            for raw in clients:
                await raw.stream.aclose()
            status, again = await upgrade(server)
            assert status == 101
            await again.stream.send_all(PING)
            assert await again.json() == {"type": "pong"}
            assert process.process.returncode is None
    assert len([line for line in process.log if "EMFILE" in line]) == 1, process.log
    assert not [line for line in process.log if "Traceback" in line]
