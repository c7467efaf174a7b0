"""`python -m ffserve serve` as a real process: signals, drain, HTTP probes, bad config.

The server is a subprocess here (signals are per process), started with port 0 and
found through its "listening" log line; its temp dir comes from
FFSERVE_STORAGE_TEMP_DIR. FFmpeg runs as the server's child, found by scanning /proc.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed

from ffserve.service.server import Endpoints
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer
from tests.helpers import Client, children_of, connect, next_error, wait_for

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (ws://\S+) \(HTTP on port (\d+)\)")


@attrs.define
class ServerProcess:
    process: trio.Process
    url: str
    http_port: int
    temp_root: Path
    log: list[str]

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ready"

    def ffmpeg_children(self) -> set[tuple[int, str]]:
        """(pid, start time) of the server's live children: pids may be reused."""
        return {(pid, start) for pid, state, start in children_of(self.process.pid) if state != "Z"}


def still_alive(children: set[tuple[int, str]]) -> set[tuple[int, str]]:
    alive = set()
    for pid, start in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.add((pid, start))
    return alive


def server_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFSERVE_")}
    env["PYTHONPATH"] = str(REPO)
    env["FFSERVE_STORAGE_TEMP_DIR"] = str(tmp_path / "work")
    env.update(settings)
    return env


@asynccontextmanager
async def run_server(tmp_path: Path, **settings: str) -> AsyncIterator[ServerProcess]:
    """Start `python -m ffserve serve` on free ports; kill it if the test leaves it."""
    log: list[str] = []
    listening = trio.Event()
    found: list[str] = []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "ffserve", "serve", "--port", "0", "--http-port", "0"],
        cwd=tmp_path,  # no ./config.toml here
        env=server_env(tmp_path, **settings),
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )

    async def read_log() -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                log.append(text)
                match = LISTENING.search(text)
                if match:
                    found.extend(match.groups())
                    listening.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_log)
            await listening.wait()
            yield ServerProcess(process, found[0], int(found[1]), tmp_path / "work", log)
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def start_blocker(client: Client, blocker: Path) -> None:
    await client.start("long", "speed", BLOCKER_OPTIONS)
    await client.upload("long", blocker)
    await wait_for(client, "long", "progress", stage="processing")


async def wait_children(server: ServerProcess) -> set[tuple[int, str]]:
    while not server.ffmpeg_children():  # noqa: ASYNC110 (no event for "a process started")
        await trio.sleep(0.01)
    return server.ffmpeg_children()


async def wait_draining(http: httpx.AsyncClient, server: ServerProcess) -> None:
    while True:
        response = await http.get(server.ready_url)
        if response.status_code == 503:
            # Nothing but the verdict; a drain has no Retry-After: the process is ending.
            assert response.json() == {"ready": False}
            assert "retry-after" not in response.headers
            return
        await trio.sleep(0.02)


async def errors_until_going_away(client: Client) -> dict[str, str]:
    """The code of each error the client gets until the server closes with 1001."""
    finals: dict[str, str] = {}
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            message = await client.recv()
            if isinstance(message, dict) and message["type"] == "error":
                finals[message["job_id"]] = message["code"]
    reason = closed.value.reason
    assert reason is not None and reason.code == 1001, reason
    return finals


def temp_roots(server: ServerProcess) -> list[Path]:
    return list(server.temp_root.glob("ffserve-*"))


async def test_sigterm_drains_until_deadline_then_stops(tmp_path: Path, blocker: Path) -> None:
    """SIGTERM: /ready 503, new jobs SHUTTING_DOWN, running job gets drain_timeout_s, then
    it is stopped: exit 0, no FFmpeg left, temp root removed. What the deadline cuts is
    told: the running job and one still waiting for its upload each get SHUTTING_DOWN,
    and then the connection closes with 1001."""
    with trio.fail_after(60):
        async with (
            run_server(tmp_path, FFSERVE_SERVER_DRAIN_TIMEOUT_S="2") as server,
            httpx.AsyncClient() as http,
        ):
            assert (await http.get(server.ready_url)).status_code == 200
            async with connect(server.url) as client:
                await start_blocker(client, blocker)
                children = await wait_children(server)
                await client.start("waiting", "thumbnail", {"timestamp": 0.5})  # no upload
                assert (await client.recv_json())["type"] == "ack"
                assert len(temp_roots(server)) == 1
                server.process.send_signal(signal.SIGTERM)
                await wait_draining(http, server)
                health = (await http.get(f"http://127.0.0.1:{server.http_port}/health")).json()
                assert health["status"] == "draining" and health["running"] == 1
                assert health["not_ready"] == "draining"
                await client.start("late", "thumbnail", {})
                await next_error(client, "SHUTTING_DOWN", "late")
                assert still_alive(children) == children  # still draining
                with trio.fail_after(2 + 15):
                    returncode = await server.process.wait()
                finals = await errors_until_going_away(client)
                assert finals == {"long": "SHUTTING_DOWN", "waiting": "SHUTTING_DOWN"}
            assert returncode == 0, server.log
            assert still_alive(children) == set()
            assert temp_roots(server) == []
            assert not any("Traceback" in line for line in server.log), server.log


STUCK_FFMPEG = """#!{python}
# FFmpeg that a stop must SIGKILL: SIGTERM is ignored. `-version` is the real one's.
import os, signal, sys, time
if "-version" in sys.argv:
    os.execvp("ffmpeg", ["ffmpeg", *sys.argv[1:]])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(600)
"""


async def test_a_drain_waits_for_stopped_jobs_as_long_as_the_kill_grace(
    tmp_path: Path, blocker: Path
) -> None:
    """The time a drain gives stopped jobs to end follows `ffmpeg.kill_grace_s`: with a
    grace of 6 s and an FFmpeg that only SIGKILL ends, the job still gets its
    SHUTTING_DOWN before the connection closes (with a fixed 5 s the drain gave up first
    and the connection closed without it)."""
    fake = tmp_path / "ffmpeg"
    fake.write_text(STUCK_FFMPEG.format(python=sys.executable))
    fake.chmod(0o755)
    settings = {
        "FFSERVE_FFMPEG_FFMPEG": str(fake),
        "FFSERVE_FFMPEG_KILL_GRACE_S": "6",
        "FFSERVE_SANDBOX_MODE": "off",  # the fake is a script of this Python
        "FFSERVE_SERVER_DRAIN_TIMEOUT_S": "1",
    }
    with trio.fail_after(60):
        async with run_server(tmp_path, **settings) as server, httpx.AsyncClient() as http:
            async with connect(server.url) as client:
                await start_blocker(client, blocker)
                children = await wait_children(server)
                server.process.send_signal(signal.SIGTERM)
                await wait_draining(http, server)
                finals = await errors_until_going_away(client)
                assert finals == {"long": "SHUTTING_DOWN"}, finals
                assert await server.process.wait() == 0, server.log
            assert still_alive(children) == set()
            assert temp_roots(server) == []


async def test_drain_delivers_and_exits_once_jobs_are_done(
    tmp_path: Path, blocker: Path, media: Media
) -> None:
    """During the drain, admitted jobs still run and their results reach the client;
    the server exits when the last job ends (not at the 60 s deadline), after closing
    each connection with 1001 behind the frames it owed."""
    with trio.fail_after(30):
        async with (
            run_server(tmp_path, FFSERVE_SERVER_DRAIN_TIMEOUT_S="60") as server,
            httpx.AsyncClient() as http,
        ):
            async with connect(server.url) as client:
                await start_blocker(client, blocker)
                children = await wait_children(server)
                await client.start("held", "thumbnail", {"timestamp": 0.5})
                assert (await client.recv_json())["type"] == "ack"
                server.process.send_signal(signal.SIGTERM)
                await wait_draining(http, server)
                await client.upload("held", media.clip)  # admitted before: still runs
                result = await client.collect("held")
                assert result.final["type"] == "completed", result.final
                assert result.outputs[0][1][:2] == b"\xff\xd8"
                await client.send({"type": "cancel_job", "job_id": "long"})
                while True:
                    message = await client.recv_json()
                    if message["type"] == "error":
                        assert message["code"] == "JOB_CANCELLED", message
                        break
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv()
                reason = closed.value.reason
                assert reason is not None and reason.code == 1001
                returncode = await server.process.wait()  # well inside the 60 s drain
            assert returncode == 0, server.log
            assert still_alive(children) == set()
            assert temp_roots(server) == []


async def test_second_sigint_stops_at_once(tmp_path: Path, blocker: Path) -> None:
    with trio.fail_after(30):
        async with (
            run_server(tmp_path, FFSERVE_SERVER_DRAIN_TIMEOUT_S="600") as server,
            httpx.AsyncClient() as http,
        ):
            async with connect(server.url) as client:
                await start_blocker(client, blocker)
                children = await wait_children(server)
                server.process.send_signal(signal.SIGINT)
                await wait_draining(http, server)
                assert still_alive(children) == children
                server.process.send_signal(signal.SIGINT)
                returncode = await server.process.wait()  # not after 600 s of drain
            assert returncode == 0, server.log
            assert still_alive(children) == set()
            assert temp_roots(server) == []


async def test_health_and_ready(start_server: StartServer) -> None:
    server: Endpoints = await start_server(jobs={"max_concurrent": 3, "queue_limit": 5})
    base = f"http://127.0.0.1:{server.http_port}"
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{base}/health")).json()
            assert health["status"] == "ok"
            assert (health["capacity"], health["queue_limit"]) == (3, 5)
            assert (health["running"], health["queued"]) == (0, 0)
            assert health["ffmpeg_version"]
            ready = await http.get(f"{base}/ready")
            assert (ready.status_code, ready.json()) == (200, {"ready": True})
            assert "retry-after" not in ready.headers and health["not_ready"] is None
            async with connect(server.url):
                while (await http.get(f"{base}/health")).json()["connections"] != 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            metrics = await http.get(f"{base}/metrics")
            assert metrics.status_code == 200 and "ffserve_worker_capacity 3" in metrics.text
            assert (await http.get(f"{base}/nope")).status_code == 404
            assert (await http.post(f"{base}/ready")).status_code == 405


async def test_ready_is_503_while_the_temp_disk_is_down_to_its_reserve(
    start_server: StartServer,
) -> None:
    """No disk left above `storage.reserve_mb`: no job with an input could be let in, so
    the balancer should send clients elsewhere, and come back after Retry-After."""
    low = await start_server(storage={"reserve_mb": 1e9}, jobs={"retry_after_s": 2.5})
    fine = await start_server(storage={"reserve_mb": 0})
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            refused = await http.get(f"http://127.0.0.1:{low.http_port}/ready")
            health = (await http.get(f"http://127.0.0.1:{low.http_port}/health")).json()
            ready = await http.get(f"http://127.0.0.1:{fine.http_port}/ready")
    assert (refused.status_code, refused.json()) == (503, {"ready": False})
    assert refused.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert health["not_ready"] == "disk reserve" and health["status"] == "ok"
    assert ready.status_code == 200


async def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "ffserve", "serve", "--port", "0", "--http-port", "0", *args],
        cwd=tmp_path,
        env=server_env(tmp_path, **env),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[jobs]\nmax_concurent = 1\n", "jobs.max_concurent"),
        ("[jobs]\nmax_concurrent = 0\n", "jobs.max_concurrent"),
        ("[jobs]\nmax_concurrent = 'two'\n", "jobs.max_concurrent"),
        ("[jbos]\nmax_concurrent = 1\n", "jbos"),
    ],
)
async def test_bad_config_key_exits_nonzero_naming_it(
    tmp_path: Path, toml: str, named: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with trio.fail_after(30):
        result = await run_cli(tmp_path, "--config", str(config))
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert named in stderr, stderr
    assert "Traceback" not in stderr, stderr


async def test_bad_env_override_exits_nonzero_naming_it(tmp_path: Path) -> None:
    with trio.fail_after(30):
        result = await run_cli(tmp_path, FFSERVE_JOBS_MAX_CONCURENT="1")
    assert result.returncode != 0
    assert "FFSERVE_JOBS_MAX_CONCURENT" in result.stderr.decode()


def one_line(stderr: bytes) -> str:
    """The whole of stderr, which must be one line and no traceback."""
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text and "ExceptionGroup" not in text, text
    return text.strip()


@pytest.mark.parametrize(("flag", "endpoint"), [("--port", "WebSocket"), ("--http-port", "HTTP")])
async def test_a_busy_port_is_one_line_and_exit_1(tmp_path: Path, flag: str, endpoint: str) -> None:
    """A port another process holds: the error names it and what it was for. (At log
    level error: the start-up INFO lines are not the error's to count.)"""
    with trio.socket.socket() as held:
        await held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with trio.fail_after(30):
            result = await run_cli(tmp_path, flag, str(port), "--log-level", "error")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert (
        line == f"ffserve: cannot listen on 127.0.0.1:{port} ({endpoint}): Address already in use"
    )
    assert list((tmp_path / "work").glob("ffserve-*")) == []  # its root went with it


async def test_a_bad_log_level_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with trio.fail_after(30):
        result = await run_cli(tmp_path, "--log-level", "loud")
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "ffserve: --log-level 'loud' is not one of debug, info, warning, error, critical"
    )


async def test_a_missing_ffmpeg_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with trio.fail_after(30):
        result = await run_cli(tmp_path, FFSERVE_FFMPEG_FFMPEG="/nonexistent")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("ffserve: cannot run FFmpeg at '/nonexistent'"), line
