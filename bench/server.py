"""The server under test: one we start (`open_server`) or one already running (`--url`).

A started server is `python -m ffserve serve` with environment overrides for free
loopback ports, a private temp dir and the worker count; it is stopped with SIGTERM
(then SIGKILL) and reaped on the way out, whatever happened.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from bench.procstat import ProcessWatch

REPO = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 15.0


class TargetError(Exception):
    """The target server cannot be used (refused, not loopback, did not start)."""


@attrs.frozen
class Target:
    url: str  # ws://host:port/
    health_url: str | None
    health: dict[str, Any]  # what /health said at the start, {} if unreachable
    workers: int
    watch: ProcessWatch | None  # None when the server's pid is not ours to read
    spawned: bool

    @property
    def features(self) -> frozenset[str]:
        """Protocol extensions the server advertises in /health (`features`)."""
        features = self.health.get("features") or ()
        return frozenset(str(f) for f in features) if isinstance(features, list) else frozenset()


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def listener_pid(port: int) -> int | None:
    """The pid of a process of ours listening on 127.0.0.1:`port`, found through /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


async def get_health(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        response = await client.get(url)
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def connect_target(
    url: str, health_url: str | None, workers: int | None, *, allow_remote: bool
) -> Target:
    """Describe a running server. Errors: TargetError for a non-loopback URL unless allowed."""
    if not allow_remote and not is_loopback(url):
        raise TargetError(f"{url} is not a loopback address; pass --allow-remote to bench it")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or parts.port is None:
        raise TargetError(f"{url} is not a ws:// URL with a port")
    if health_url is None:
        health_url = f"http://{parts.hostname}:{parts.port + 1}/health"
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        health = await get_health(client, health_url) or {}
    capacity = health.get("capacity")
    count = workers or (capacity if isinstance(capacity, int) else None) or os.cpu_count() or 1
    pid = listener_pid(parts.port) if is_loopback(url) else None
    watch = ProcessWatch(pid) if pid is not None and pid != os.getpid() else None
    return Target(url, health_url if health else None, health, count, watch, spawned=False)


@asynccontextmanager
async def open_server(workers: int, workdir: Path, *, log_path: Path) -> AsyncIterator[Target]:
    """Start `python -m ffserve serve` on free loopback ports; stop and reap it on exit.

    Errors: TargetError if it exits or is not healthy within 30 s.
    """
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "FFSERVE_SERVER_HOST": "127.0.0.1",
        "FFSERVE_SERVER_PORT": str(port),
        "FFSERVE_SERVER_HTTP_PORT": str(http_port),
        "FFSERVE_STORAGE_TEMP_DIR": str(workdir),
        "FFSERVE_JOBS_MAX_CONCURRENT": str(workers),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = [sys.executable, "-m", "ffserve", "serve"]
    if (REPO / "config.toml").is_file():
        args += ["--config", str(REPO / "config.toml")]
    health_url = f"http://127.0.0.1:{http_port}/health"
    async with await trio.open_file(log_path, "wb") as log:
        process = await trio.lowlevel.open_process(
            args,
            env=env,
            cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=log.wrapped,
            stderr=log.wrapped,
        )
    try:
        health = await _wait_healthy(process, health_url, log_path)
        yield Target(
            f"ws://127.0.0.1:{port}/",
            health_url,
            health,
            workers,
            ProcessWatch(process.pid),
            spawned=True,
        )
    finally:
        with trio.move_on_after(STOP_GRACE_S + 5, shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_GRACE_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _wait_healthy(process: trio.Process, url: str, log_path: Path) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        with trio.move_on_after(30):
            while process.poll() is None:
                health = await get_health(client, url)
                if health is not None:
                    return health
                await trio.sleep(0.1)
    tail = (await trio.Path(log_path).read_text(errors="replace"))[-2000:]
    raise TargetError(f"the server did not become healthy (exit code {process.poll()}):\n{tail}")
