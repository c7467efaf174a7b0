"""The client's retries against real servers: BUSY, SHUTTING_DOWN and a refused connection
are tried again until the job completes (its output probed), within the bounds; a job
whose upload began is never sent twice."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from ffserve.client import Busy, ConnectionFailed, Retry, open_client
from ffserve.service.server import Endpoints, serve
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer, test_config
from tests.helpers import Client, connect, duration, probe, streams, wait_for

THUMB = {"timestamp": 0.5, "width": 160}
QUICK = {"first_wait_s": 0.05, "max_wait_s": 0.2}


@attrs.frozen
class WatchedRetry(Retry):
    """A Retry that says when the client is about to wait after a failed attempt, so a
    test changes the world exactly between two attempts, not after a guessed sleep."""

    failed: list[float | None] = attrs.field(factory=list, eq=False)
    first_failure: trio.Event = attrs.field(factory=trio.Event, eq=False)

    def wait(self, failures: int, hint: float | None = None) -> float:
        self.failed.append(hint)
        self.first_failure.set()
        return super().wait(failures, hint)


def outputs_in(directory: Path) -> list[Path]:
    return list(directory.glob("*.jpg*"))


def assert_thumbnail(path: Path) -> None:
    [picture] = streams(probe(path), "video")
    assert (picture["codec_name"], picture["width"]) == ("mjpeg", 160)


@asynccontextmanager
async def blocking_job(url: str, blocker: Path) -> AsyncIterator[Client]:
    """A v1 connection whose job holds a worker slot until the connection closes."""
    async with connect(url) as holder:
        await holder.start("long", "speed", BLOCKER_OPTIONS)
        await holder.upload("long", blocker)
        await wait_for(holder, "long", "progress", stage="processing")
        yield holder


def test_waits_grow_within_bounds_and_honour_the_hint() -> None:
    retry = Retry(first_wait_s=0.5, max_wait_s=4.0)
    for failures, backoff in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [retry.wait(failures) for _ in range(200)]
        assert all(backoff <= w <= 1.5 * backoff for w in waits)
        assert len(set(waits)) > 100  # spread: clients refused together come back apart
    assert all(7.0 <= retry.wait(1, hint=7.0) <= 10.5 for _ in range(100))
    assert all(retry.wait(3, hint=0.1) >= 2.0 for _ in range(100))  # backoff beats a small hint
    with pytest.raises(ValueError):
        Retry(retries=-1)


async def test_busy_then_completes(
    start_server: StartServer, media: Media, blocker: Path, tmp_path: Path
) -> None:
    """One worker slot, no queue: a job is refused BUSY (with the server's hint) while
    another holds the slot, and completes once the slot is free."""
    server = await start_server(jobs={"max_concurrent": 1, "queue_limit": 0, "retry_after_s": 0.1})
    retry = WatchedRetry(retries=100, within_s=60, **QUICK)
    with trio.fail_after(60):
        async with (
            blocking_job(server.url, blocker) as holder,
            open_client(server.url, retry=retry) as client,
            trio.open_nursery() as nursery,
        ):

            async def free_the_slot() -> None:
                await retry.first_failure.wait()
                await holder.ws.aclose()  # the server cancels its job

            nursery.start_soon(free_the_slot)
            result = await client.run("thumbnail", [media.clip], THUMB, out_dir=tmp_path)
    assert retry.failed and retry.failed[0] == 0.1  # details.retry_after_s, as configured
    assert_thumbnail(result.outputs[0].path)


async def test_busy_until_the_bound_is_a_clear_error(
    start_server: StartServer, media: Media, blocker: Path, tmp_path: Path
) -> None:
    server = await start_server(jobs={"max_concurrent": 1, "queue_limit": 0, "retry_after_s": 0})
    with trio.fail_after(60):
        async with (
            blocking_job(server.url, blocker),
            open_client(server.url, retry=Retry(retries=2, **QUICK)) as client,
        ):
            with pytest.raises(Busy) as caught:
                await client.run("thumbnail", [media.clip], THUMB, out_dir=tmp_path)
            # Nothing of the refused attempts is left: the connection runs the next job.
            state = await health(server)
    assert caught.value.code == "BUSY" and caught.value.attempts == 3
    assert "gave up after 3 attempts" in str(caught.value)
    assert (state["running"], state["queued"]) == (1, 0)
    assert not outputs_in(tmp_path)


async def health(server: Endpoints) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        found: dict[str, Any] = (
            await http.get(f"http://127.0.0.1:{server.http_port}/health")
        ).json()
    return found


async def test_shutting_down_then_completes_on_the_next_server(
    nursery: trio.Nursery, media: Media, blocker: Path, tmp_path: Path
) -> None:
    """A rolling restart on one address: the old server drains (its listener closed, its
    running job kept), the client's next job there is refused SHUTTING_DOWN; the retry,
    on a new connection, reaches the new server on the same port and completes."""
    stop_old = trio.Event()
    old_config = test_config(tmp_path / "old", server={"drain_timeout_s": 60})
    old: Endpoints = await nursery.start(partial(serve, old_config, shutdown=stop_old))
    retry = WatchedRetry(retries=20, within_s=60, **QUICK)
    with trio.fail_after(60):
        async with (
            blocking_job(old.url, blocker),
            open_client(old.url, retry=retry) as client,
            httpx.AsyncClient() as http,
        ):
            stop_old.set()
            ready = f"http://127.0.0.1:{old.http_port}/ready"
            while (await http.get(ready)).status_code != 503:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await nursery.start(serve, test_config(tmp_path / "new", server={"port": old.port}))
            result = await client.run("thumbnail", [media.clip], THUMB, out_dir=tmp_path)
    assert retry.failed == [None]  # one SHUTTING_DOWN, no hint: then the new server
    assert_thumbnail(result.outputs[0].path)


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


async def test_connection_refused_until_the_server_comes_up(
    nursery: trio.Nursery, media: Media, tmp_path: Path
) -> None:
    port = free_port()
    retry = WatchedRetry(retries=100, within_s=60, **QUICK)

    async def come_up() -> None:
        await retry.first_failure.wait()
        await nursery.start(serve, test_config(tmp_path, server={"port": port}))

    nursery.start_soon(come_up)
    with trio.fail_after(60):
        async with open_client(f"ws://127.0.0.1:{port}/", retry=retry) as client:
            result = await client.run("probe", [media.clip])
    assert retry.failed and result.metadata["duration"] == pytest.approx(2.0, abs=0.1)
    assert duration(probe(media.clip)) == pytest.approx(result.metadata["duration"], abs=0.01)


async def test_refused_until_the_bound_is_a_clear_error() -> None:
    with trio.fail_after(30), pytest.raises(ConnectionFailed) as caught:
        async with open_client(f"ws://127.0.0.1:{free_port()}/", retry=Retry(retries=3, **QUICK)):
            pass
    assert caught.value.attempts == 4 and "gave up after 4 attempts" in str(caught.value)
    with trio.fail_after(30), pytest.raises(ConnectionFailed) as once:
        async with open_client("ws://127.0.0.1:1/", retry=Retry(retries=0)):
            pass
    assert once.value.attempts == 1 and "gave up" not in str(once.value)


async def test_a_job_cut_after_its_upload_began_is_not_sent_again(
    nursery: trio.Nursery, blocker: Path, tmp_path: Path
) -> None:
    """The drain deadline stops a running job (SHUTTING_DOWN after its ack): the client
    cannot know what ran, so it raises and does not try again."""
    stop = trio.Event()
    config = test_config(tmp_path, server={"drain_timeout_s": 0})
    server: Endpoints = await nursery.start(partial(serve, config, shutdown=stop))
    retry = WatchedRetry(retries=100, within_s=60, **QUICK)
    running = trio.Event()
    with trio.fail_after(60):
        async with open_client(server.url, retry=retry) as client:

            async def job() -> None:
                with pytest.raises(Busy) as caught:
                    await client.run(
                        "speed",
                        [blocker],
                        BLOCKER_OPTIONS,
                        out_dir=tmp_path,
                        progress=lambda p: running.set() if p.phase == "processing" else None,
                    )
                assert caught.value.code == "SHUTTING_DOWN" and caught.value.attempts == 1

            async with trio.open_nursery() as jobs:
                jobs.start_soon(job)
                await running.wait()
                stop.set()
    assert retry.failed == []
