"""Job lifecycle: cancel, timeout and disconnect in every phase, admission (BUSY), fairness.

After each ending the client has its error (where one is due), the FFmpeg child is
gone (FFmpeg runs as a child of this process: the server is in-process) and the job's
temp dir is removed. The long-running job is `speed` 0.25 of two hours of silence (the
`blocker` fixture): it holds the worker slot until the test ends it.

Phases and what is asserted:
- uploading (start_job sent, no upload yet): cancel -> JOB_CANCELLED; no upload within
  jobs.input_timeout_s -> TIMEOUT; disconnect -> admission released, no dir.
- queued (jobs.max_concurrent=1, slot held by the blocker): cancel -> JOB_CANCELLED and
  the slot holder is untouched; disconnect -> the waiter leaves the queue. jobs.timeout_s
  bounds FFmpeg's run time only (README: "FFmpeg run time per job"): a queued job is not
  timed out while it waits, and its clock starts when its FFmpeg does (asserted).
- running: cancel -> JOB_CANCELLED, timeout -> TIMEOUT, disconnect; the FFmpeg pid dies.
- delivering (after `completed`): cancel -> CANCEL_FAILED and the output still arrives
  whole; disconnect without reading the output -> dir and connection cleaned up. The job
  itself never waits on a slow reader while delivering (its output is queued on the
  connection's bounded outbox, then the dir is removed), so "timeout while delivering"
  does not exist and a reader that stops does not pin the job's dir (asserted).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing

from ffserve.config import Config
from ffserve.errors import ErrorCode, ProtocolError
from ffserve.jobs.job import Job
from ffserve.jobs.pool import WorkerPool
from ffserve.jobs.quota import Quota
from ffserve.jobs.services import Services
from ffserve.jobs.state import JobState
from ffserve.service.server import Endpoints, confine_children
from ffserve.session.connection import Connection
from ffserve.session.writer import write_outbox
from ffserve.wire.messages import FileSpec, Pong, UploadInput
from ffserve.wire.options import parse_options
from ffserve.wire.outbox import Outbox
from ffserve.wire.websocket import ConnectionClosed
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer, test_config
from tests.helpers import (
    Client,
    connect,
    descendants,
    job_dirs,
    next_error,
    split_frame,
    wait_for,
    wait_no_children,
)

THUMB = {"timestamp": 0.5, "width": 64}


# --- helpers ----------------------------------------------------------------------------


async def health(endpoints: Endpoints) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{endpoints.http_port}/health")
    data: dict[str, Any] = response.json()
    return data


async def settle(endpoints: Endpoints, **expected: int) -> dict[str, Any]:
    """Poll /health until it shows `expected` (e.g. connections=0); the caller bounds it."""
    while True:
        data = await health(endpoints)
        if all(data[k] == v for k, v in expected.items()):
            return data
        await trio.sleep(0.02)


def ffmpeg_pids() -> set[int]:
    pids = set()
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ffmpeg":
                pids.add(pid)
        except OSError:
            pass
    return pids


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


async def start_blocker(client: Client, blocker: Path, job_id: str = "blocker") -> set[int]:
    """Start the long job and return once its FFmpeg runs; returns FFmpeg's pid(s)."""
    before = ffmpeg_pids()
    await client.start(job_id, "speed", BLOCKER_OPTIONS)
    await client.upload(job_id, blocker)
    await wait_for(client, job_id, "progress", stage="processing")
    while not (ffmpeg_pids() - before):  # noqa: ASYNC110 (no event for "a process started")
        await trio.sleep(0.01)
    return ffmpeg_pids() - before


async def job_error(client: Client, job_id: str, code: str) -> dict[str, Any]:
    """Skip this job's progress (and other jobs' frames) up to its error; check the code."""
    while True:
        message = await client.recv()
        if isinstance(message, bytes) or message.get("job_id") != job_id:
            continue
        assert message["type"] in ("progress", "error"), message
        if message["type"] == "error":
            assert message["code"] == code, message
            return message


async def assert_clean(workdir: Path) -> None:
    assert await wait_no_children() == []
    assert job_dirs(workdir) == []


async def completes(client: Client, media: Media, job_id: str) -> None:
    result = await client.run("thumbnail", media.clip, THUMB, job_id=job_id)
    assert result.final["type"] == "completed", result.final


# --- uploading ------------------------------------------------------------------------


async def test_cancel_while_uploading(server: Endpoints, media: Media, workdir: Path) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("up", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            assert len(job_dirs(workdir)) == 1
            await client.send({"type": "cancel_job", "job_id": "up"})
            await next_error(client, "JOB_CANCELLED", "up")
            await assert_clean(workdir)
            assert (await health(server))["queued"] == 0  # admission released
            # The upload that arrives late is for a job that no longer exists.
            await client.upload("up", media.clip)
            await next_error(client, "INVALID_BINARY", "up")
            await completes(client, media, "up")


async def test_timeout_while_uploading(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    server = await start_server(jobs={"input_timeout_s": 0.3})
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("slow", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            error = await next_error(client, "TIMEOUT", "slow")
            assert "/tmp" not in error["message"]
            await assert_clean(workdir)
            assert (await health(server))["queued"] == 0


async def test_disconnect_while_uploading(server: Endpoints, workdir: Path) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("gone", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            assert len(job_dirs(workdir)) == 1
        await settle(server, connections=0, queued=0, running=0)
        await assert_clean(workdir)


# --- queued ---------------------------------------------------------------------------


async def test_cancel_while_queued(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path
) -> None:
    server = await start_server(jobs={"max_concurrent": 1})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            pids = await start_blocker(client, blocker)
            await client.start("waiting", "thumbnail", THUMB)
            await client.upload("waiting", media.clip)
            await wait_for(client, "waiting", "progress", stage="queued")
            assert len(job_dirs(workdir)) == 2
            await client.send({"type": "cancel_job", "job_id": "waiting"})
            await job_error(client, "waiting", "JOB_CANCELLED")
            assert len(job_dirs(workdir)) == 1  # only the blocker's
            assert alive(pids) == pids  # the slot holder is untouched
            assert (await health(server))["running"] == 1
            await client.send({"type": "cancel_job", "job_id": "blocker"})
            await job_error(client, "blocker", "JOB_CANCELLED")
            assert alive(pids) == set()
            await assert_clean(workdir)
            await completes(client, media, "next")  # the slot was handed back


async def test_disconnect_while_queued(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path
) -> None:
    server = await start_server(jobs={"max_concurrent": 1})
    with trio.fail_after(60):
        async with connect(server.url) as holder:
            pids = await start_blocker(holder, blocker)
            async with connect(server.url) as waiter:
                await waiter.start("waiting", "thumbnail", THUMB)
                await waiter.upload("waiting", media.clip)
                await wait_for(waiter, "waiting", "progress", stage="queued")
            await settle(server, connections=1, running=1, queued=0)
            assert len(job_dirs(workdir)) == 1
            assert alive(pids) == pids
            await holder.send({"type": "cancel_job", "job_id": "blocker"})
            await job_error(holder, "blocker", "JOB_CANCELLED")
            await assert_clean(workdir)
            await completes(holder, media, "next")


async def test_queue_wait_does_not_count_towards_timeout(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path
) -> None:
    """jobs.timeout_s is FFmpeg run time: a job that waited in the queue for longer than
    that (behind two jobs that each ran the full timeout) still runs and completes."""
    server = await start_server(jobs={"max_concurrent": 1, "timeout_s": 1.5})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            log: list[tuple[str, str, str]] = []
            outputs: list[bytes] = []

            async def until(job_id: str, kind: str, stage: str = "") -> None:
                # Seen at all, not necessarily last: b2's TIMEOUT goes out after its dir is
                # removed, by which time j3 (given b2's slot) may have completed and sent
                # its output frame too, so frames are kept, not skipped.
                while (job_id, kind, stage) not in log:
                    message = await client.recv()
                    if isinstance(message, bytes):
                        outputs.append(message)
                        continue
                    label = message.get("stage") or message.get("code") or ""
                    log.append((message["job_id"], message["type"], label))

            await client.start("b1", "speed", BLOCKER_OPTIONS)
            await client.upload("b1", blocker)
            await until("b1", "progress", "processing")
            await client.start("b2", "speed", BLOCKER_OPTIONS)
            await client.upload("b2", blocker)
            await until("b2", "progress", "queued")
            await client.start("j3", "thumbnail", THUMB)
            await client.upload("j3", media.clip)
            await until("j3", "progress", "queued")
            await until("b1", "error", "TIMEOUT")
            await until("b2", "error", "TIMEOUT")
            await until("j3", "completed")
            j3_queued = log.index(("j3", "progress", "queued"))
            # j3 was waiting before b1 timed out, then b2 ran its full timeout_s ...
            assert j3_queued < log.index(("b1", "error", "TIMEOUT"))
            assert log.index(("b2", "progress", "processing")) > j3_queued
            # ... and j3's own clock started only with its FFmpeg.
            assert ("j3", "error", "TIMEOUT") not in log
            header, data = split_output(outputs[0] if outputs else await client.recv())
            assert header["job_id"] == "j3" and data[:2] == b"\xff\xd8"
            await assert_clean(workdir)


def split_output(frame: dict[str, Any] | bytes) -> tuple[dict[str, Any], bytes]:
    assert isinstance(frame, bytes), frame
    return split_frame(frame)


# --- running --------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["cancel", "timeout", "disconnect"])
async def test_running_job_ends(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path, ending: str
) -> None:
    timeout = 1.0 if ending == "timeout" else 600.0
    server = await start_server(jobs={"timeout_s": timeout})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            pids = await start_blocker(client, blocker)
            assert alive(pids) == pids and len(job_dirs(workdir)) == 1
            if ending == "cancel":
                await client.send({"type": "cancel_job", "job_id": "blocker"})
                await job_error(client, "blocker", "JOB_CANCELLED")
            elif ending == "timeout":
                error = await job_error(client, "blocker", "TIMEOUT")
                assert "/tmp" not in error["message"]
            if ending != "disconnect":
                # Reaped and removed before the error was sent.
                assert alive(pids) == set()
                assert job_dirs(workdir) == []
                await completes(client, media, "next")
        await settle(server, connections=0, running=0, queued=0)
        assert alive(pids) == set()
        await assert_clean(workdir)


# --- delivering -----------------------------------------------------------------------


async def test_cancel_while_delivering(server: Endpoints, media: Media, workdir: Path) -> None:
    """After `completed` the job cannot be cancelled: CANCEL_FAILED, and the output
    frame still arrives whole."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("d", "thumbnail", THUMB)
            await client.upload("d", media.clip)
            await wait_for(client, "d", "completed")
            await client.send({"type": "cancel_job", "job_id": "d"})
            # The refusal may overtake the output frame (it is sent by the reader while
            # the job reads its output file); both arrive, the output whole.
            frames = [await client.recv(), await client.recv()]
            (output,) = [f for f in frames if isinstance(f, bytes)]
            (error,) = [f for f in frames if not isinstance(f, bytes)]
            assert error["type"] == "error" and error["code"] == "CANCEL_FAILED", error
            assert error["job_id"] == "d"
            header, data = split_output(output)
            assert header["job_id"] == "d" and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
            await assert_clean(workdir)
            await completes(client, media, "d")


async def test_reader_that_stops_does_not_pin_the_job(
    server: Endpoints, media: Media, workdir: Path
) -> None:
    """A client that stops reading after `completed`, then goes away: the job's dir goes
    as soon as its output is queued (not when the client reads it), and the connection
    is cleaned up on disconnect."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("d", "extract_audio", {"format": "wav"})
            await client.upload("d", media.long)
            await wait_for(client, "d", "completed")
            # Not reading the output frame; the job must still finish and clean up.
            await settle(server, running=0, queued=0)
            while job_dirs(workdir):  # noqa: ASYNC110 (no event for "a dir was removed")
                await trio.sleep(0.02)
        await settle(server, connections=0)
        await assert_clean(workdir)


# --- admission --------------------------------------------------------------------------


async def test_busy_when_admission_is_full(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path
) -> None:
    server = await start_server(jobs={"max_concurrent": 1, "queue_limit": 1})
    with trio.fail_after(60):
        async with connect(server.url) as client, httpx.AsyncClient() as http:
            ready = f"http://127.0.0.1:{server.http_port}/ready"
            assert (await http.get(ready)).status_code == 200
            await start_blocker(client, blocker)
            await client.start("second", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            # Only a job whose input is in takes a queue place (issue 11): one receiving
            # its input counts against its client's quota instead.
            await client.upload("second", media.clip)
            await wait_for(client, "second", "progress", stage="queued")
            await client.start("third", "thumbnail", THUMB)
            error = await next_error(client, "BUSY", "third")
            assert "/tmp" not in error["message"]
            assert error["details"] == {"retry_after_s": 2.0}  # jobs.retry_after_s
            response = await http.get(ready)
            assert (response.status_code, response.json()) == (503, {"ready": False})
            assert response.headers["retry-after"] == "2"
            # Another connection is refused too: admission is server-wide.
            async with connect(server.url) as other:
                await other.start("x", "thumbnail", THUMB)
                await next_error(other, "BUSY", "x")
            # Freeing a place admits the next job.
            await client.send({"type": "cancel_job", "job_id": "second"})
            await job_error(client, "second", "JOB_CANCELLED")
            await client.send({"type": "cancel_job", "job_id": "blocker"})
            await job_error(client, "blocker", "JOB_CANCELLED")
            assert (await http.get(ready)).status_code == 200
            await completes(client, media, "third")
        await assert_clean(workdir)


async def test_fair_share_between_connections(
    start_server: StartServer, media: Media, blocker: Path, workdir: Path
) -> None:
    """Connection A queues 12 jobs, then B queues 1: B's is served before A's 3rd."""
    server = await start_server(jobs={"max_concurrent": 1})
    done: list[str] = []
    with trio.fail_after(90):
        async with (
            connect(server.url) as holder,
            connect(server.url) as a,
            connect(server.url) as b,
        ):
            await start_blocker(holder, blocker)
            a_jobs = [f"a{n:02d}" for n in range(12)]
            for job_id in a_jobs:
                await a.start(job_id, "thumbnail", THUMB)
                await a.upload(job_id, media.clip)
            queued: set[str] = set()
            while queued != set(a_jobs):  # every one of A's jobs waits for the slot ...
                message = await a.recv_json()
                assert message["type"] in ("ack", "progress"), message
                if message.get("stage") == "queued":
                    queued.add(message["job_id"])
            await b.start("b", "thumbnail", THUMB)
            await b.upload("b", media.clip)
            await wait_for(b, "b", "progress", stage="queued")  # ... then B's does
            assert (await health(server))["queued"] == 13

            async def record(client: Client, count: int) -> None:
                """Append job ids to `done` as their output frames arrive."""
                while count:
                    message = await client.recv()
                    if isinstance(message, bytes):
                        done.append(split_frame(message)[0]["job_id"])
                        count -= 1
                    else:
                        assert message["type"] in ("progress", "completed"), message

            async with trio.open_nursery() as nursery:
                nursery.start_soon(record, a, len(a_jobs))
                nursery.start_soon(record, b, 1)
                await holder.send({"type": "cancel_job", "job_id": "blocker"})
        assert sorted(done) == sorted([*a_jobs, "b"])
        a_done = [n for n, job_id in enumerate(done) if job_id != "b"]
        assert done.index("b") < a_done[2], done  # before A's third
    await assert_clean(workdir)


# --- WorkerPool without FFmpeg ----------------------------------------------------------


async def test_pool_round_robin_between_owners() -> None:
    pool = WorkerPool(capacity=1, queue_limit=100)
    order: list[str] = []
    release = trio.Event()

    async def hold() -> None:
        async with pool.slot("holder"):
            await release.wait()

    async def use(owner: str, name: str) -> None:
        async with pool.slot(owner):
            order.append(name)
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            names = [("A", "A1"), ("A", "A2"), ("A", "A3"), ("A", "A4"), ("B", "B1")]
            names += [("C", "C1"), ("B", "B2")]
            for owner, name in names:  # queued in exactly this order
                nursery.start_soon(use, owner, name)
                await trio.testing.wait_all_tasks_blocked()
            assert pool.running == 1 and pool.waiting == len(names)
            release.set()
    assert order == ["A1", "B1", "C1", "A2", "B2", "A3", "A4"]
    assert pool.running == 0 and pool.waiting == 0


async def test_pool_cancelled_waiters() -> None:
    """A waiter cancelled in the queue leaves it; one cancelled just after being handed
    the slot passes it on; `running` never drifts."""
    pool = WorkerPool(capacity=1, queue_limit=100)
    got: list[str] = []
    release = trio.Event()
    scopes: dict[str, trio.CancelScope] = {}

    async def use(name: str, hold: Callable[[], Any] | None = None) -> None:
        with trio.CancelScope() as scope:
            scopes[name] = scope
            async with pool.slot(name):
                got.append(name)
                if hold is not None:
                    await hold()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use, "holder", release.wait)
            await trio.testing.wait_all_tasks_blocked()
            for name in ("w1", "w2", "w3"):
                nursery.start_soon(use, name, trio.sleep_forever if name == "w3" else None)
                await trio.testing.wait_all_tasks_blocked()
            scopes["w1"].cancel()  # cancelled while queued
            await trio.testing.wait_all_tasks_blocked()
            assert pool.waiting == 2 and pool.running == 1
            # Hand the slot to w2 and cancel w2 in the same tick, before it runs.
            release.set()
            scopes["w2"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert "w1" not in got
            assert got[-1] == "w3"  # w3 holds the slot now, whatever w2 did
            assert pool.running == 1 and pool.waiting == 0
            scopes["w3"].cancel()
    assert pool.running == 0 and pool.waiting == 0
    # And the slot is free for the fast path.
    async with pool.slot("again"):
        assert pool.running == 1


async def test_pool_admission() -> None:
    pool = WorkerPool(capacity=1, queue_limit=1)
    pool.admit()
    pool.admit()
    assert not pool.full  # both still receiving their input: no queue place taken
    pool.ready()
    pool.ready()
    assert pool.full
    with pytest.raises(Exception, match="busy") as info:
        pool.admit()
    assert getattr(info.value, "code", None) == "BUSY"
    idle = False

    async def drain() -> None:
        nonlocal idle
        await pool.wait_idle()
        idle = True

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            pool.discharge(receiving=False)
            await trio.testing.wait_all_tasks_blocked()
            assert not idle
            pool.discharge(receiving=False)
    assert idle and pool.admitted == 0


START_TEXT = (
    '{"type":"start_job","job_id":"j","operation":"thumbnail",'
    '"input":{"source":"upload"},"options":{}}'
)


async def test_ack_cancelled_on_full_outbox_releases_admission(tmp_path: Path) -> None:
    """A start_job whose `ack` cannot be queued (the client stopped reading) and is then
    cancelled (the client went away) must not leave its admission counted: a leak here
    makes the server BUSY for ever and blocks the shutdown drain."""
    config: Config = test_config(tmp_path).replace("jobs", max_concurrent=1, queue_limit=1)
    outbox, outgoing = Outbox.open(1)

    async def cancel_when_blocked(scope: trio.CancelScope) -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()

    with trio.fail_after(10):
        async with httpx.AsyncClient() as http, outgoing, trio.open_nursery() as nursery:
            services = Services.start(config, http, tmp_path, confine_children(config))
            pool = services.pool
            quota = Quota.of(config.quotas, {})
            connection = Connection(services, outbox, nursery, "client", quota)
            await outbox.send_binary(b"fills the outbox")
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_when_blocked, scope)
                await connection.on_message(START_TEXT)
            assert scope.cancelled_caught
            assert pool.admitted == pool.receiving == 0 and connection.jobs == {}
            assert services.admission.quotas._usage == {}  # its quota given back too


async def test_a_vanished_client_cancels_jobs_blocked_on_its_outbox() -> None:
    """When the writer finds the client gone, a job blocked sending to the full outbox is
    cancelled (as a disconnect), not failed by a broken channel."""

    class GoneClient:
        async def send(self, message: str | bytes) -> None:
            await trio.sleep(0.1)
            raise ConnectionClosed(1006, "connection lost")

    outbox, outgoing = Outbox.open(2)
    seen: list[type[BaseException]] = []

    async def job_sending() -> None:
        try:
            for _ in range(10):
                await outbox.send(Pong())
        except BaseException as exc:
            seen.append(type(exc))
            raise

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_outbox, GoneClient(), outbox, outgoing, nursery.cancel_scope)
            nursery.start_soon(job_sending)
    assert seen == [trio.Cancelled]


@pytest.mark.parametrize("files", [None, [FileSpec(size=10)]], ids=["v1", "chunked"])
def test_a_job_whose_input_is_complete_refuses_frames_while_it_probes(
    files: list[FileSpec] | None,
) -> None:
    """Between the last upload and `queued` the job is PROBING: its input is closed, and
    a new frame gets INVALID_BINARY, not a silent drop."""
    job = Job("j", "speed", parse_options("speed", {"speed_factor": 2}), UploadInput(files), None)
    job.begin_upload()
    assert not job.input_complete()
    assert job.state is JobState.PROBING
    with pytest.raises(ProtocolError) as refused:
        job.begin_upload()
    assert refused.value.code == ErrorCode.INVALID_BINARY
