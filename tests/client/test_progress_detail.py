"""The progress-detail extension: `eta_s` and `speed` only for a job that asked for them;
a v1 client sees exactly v1's progress fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.conftest import BLOCKER_OPTIONS, StartServer
from tests.helpers import Client, connect

V1_PROGRESS = {"type", "job_id", "percentage", "stage"}


async def running_progress(client: Client, blocker: Path, **extra: Any) -> list[dict[str, Any]]:
    """Start a blocker job (with `extra` start_job fields), collect its progress until
    FFmpeg has reported twice, then cancel it and read it to its end."""
    await client.send(
        {
            "type": "start_job",
            "job_id": "j",
            "operation": "speed",
            "input": {"source": "upload"},
            "options": BLOCKER_OPTIONS,
            **extra,
        }
    )
    await client.upload("j", blocker)
    seen: list[dict[str, Any]] = []
    while sum(m["percentage"] > 0 for m in seen) < 2:
        message = await client.recv_json()
        if message["type"] == "progress":
            seen.append(message)
    await client.send({"type": "cancel_job", "job_id": "j"})
    while (message := await client.recv_json())["type"] != "error":
        if message["type"] == "progress":
            seen.append(message)
    assert message["code"] == "JOB_CANCELLED"
    return seen


async def test_v1_client_sees_only_v1_fields(start_server: StartServer, blocker: Path) -> None:
    server = await start_server()
    with trio.fail_after(30):
        async with connect(server.url) as client:
            seen = await running_progress(client, blocker)
    assert {frozenset(m) for m in seen} == {frozenset(V1_PROGRESS)}


async def test_detail_when_asked(start_server: StartServer, blocker: Path) -> None:
    server = await start_server()
    with trio.fail_after(30):
        async with connect(server.url) as client:
            seen = await running_progress(client, blocker, progress={"detail": True})
    running = [m for m in seen if m["percentage"] > 0]
    assert all(set(m) == V1_PROGRESS | {"eta_s", "speed"} for m in running), running
    # FFmpeg runs the silence far faster than real time; 8 h of output is far from done.
    assert all(m["speed"] > 1 and m["eta_s"] > 0 for m in running), running
    assert all(set(m) == V1_PROGRESS for m in seen if m["stage"] == "queued")


async def test_detail_false_is_v1(start_server: StartServer, blocker: Path) -> None:
    server = await start_server()
    with trio.fail_after(30):
        async with connect(server.url) as client:
            seen = await running_progress(client, blocker, progress={"detail": False})
    assert {frozenset(m) for m in seen} == {frozenset(V1_PROGRESS)}
