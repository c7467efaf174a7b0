"""`ffserve.client` against a real server in-process: real FFmpeg, real sockets, outputs
probed with ffprobe; chunked transfer, typed errors, cancellation, authentication."""

from __future__ import annotations

import hashlib
import itertools
import threading
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio

from ffserve.client import (
    NO_RETRY,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobProgress,
    QuotaExceeded,
    ServerError,
    Unauthorized,
    open_client,
)
from ffserve.client.blocking import run_job_blocking
from ffserve.client.errors import ConnectionFailed
from ffserve.service.server import Endpoints
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer
from tests.helpers import duration, job_dirs, packet_hash, probe, streams
from tests.session.keys import Keys, claims


def files(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


async def health(endpoints: Endpoints) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{endpoints.http_port}/health")
    result: dict[str, Any] = response.json()
    return result


async def test_thumbnail_and_compress(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    server = await start_server()
    events: list[JobProgress] = []
    with trio.fail_after(60):
        async with open_client(server.url) as client:
            thumb = await client.run(
                "thumbnail", [media.clip], {"timestamp": 1, "width": 320}, out_dir=tmp_path
            )
            small = await client.run(
                "compress",
                [media.clip],
                {"preset": "low", "max_width": 320},
                out_dir=tmp_path,
                progress=events.append,
            )
    [image] = thumb.outputs
    assert image.path.parent == tmp_path and image.path.suffix == ".jpg"
    [picture] = streams(probe(image.path), "video")
    assert (picture["codec_name"], picture["width"], picture["height"]) == ("mjpeg", 320, 180)
    [video_out] = small.outputs
    info = probe(video_out.path)
    [video], [audio] = streams(info, "video"), streams(info, "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)
    assert audio["codec_name"] == "aac"
    assert abs(duration(info) - 2.0) < 0.1
    assert video_out.metadata["size_bytes"] == video_out.path.stat().st_size
    assert small.metadata == video_out.metadata
    phases = [e.phase for e in events]
    assert phases.index("upload") < phases.index("processing") < phases.index("delivery")
    assert events[-1].phase == "delivery" and events[-1].percentage == 100.0
    assert not files(tmp_path, "*.part")


async def test_chunked_round_trip_with_smaller_server_chunks(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    """The client starts at 1 MiB chunks, the server allows 64 KiB: it goes down and the
    file travels both ways in many chunks, checked by sha256 and by its video packets."""
    server = await start_server(limits={"chunk_kb": 64})
    assert media.clip.stat().st_size > 3 * 64 * 1024
    uploads: list[JobProgress] = []
    deliveries: list[JobProgress] = []

    def seen(event: JobProgress) -> None:
        {"upload": uploads, "delivery": deliveries}.get(event.phase, []).append(event)

    with trio.fail_after(60):
        async with open_client(server.url) as client:
            result = await client.run("remove_audio", [media.clip], out_dir=tmp_path, progress=seen)
    [output] = result.outputs
    data = output.path.read_bytes()
    assert len(data) > 3 * 64 * 1024
    assert hashlib.sha256(data).hexdigest() == output.metadata["sha256"]
    assert packet_hash(output.path) == packet_hash(media.clip)  # video copied bit for bit
    assert len(uploads) > 3 and uploads[-1].done_bytes == media.clip.stat().st_size
    steps = itertools.pairwise(u.done_bytes or 0 for u in uploads)
    assert all(b - a <= 64 * 1024 for a, b in steps)
    assert len(deliveries) > 3 and deliveries[-1].done_bytes == len(data)


@pytest.mark.parametrize(
    ("operation", "options", "code", "cls"),
    [
        ("speed", {"speed_factor": 20}, "VALIDATION_ERROR", InvalidRequest),
        ("extract_audio", {}, "NO_AUDIO_STREAM", JobFailed),
        ("gif", {}, "UNSUPPORTED_MEDIA", JobFailed),
    ],
)
async def test_server_errors_are_typed(
    start_server: StartServer,
    media: Media,
    tmp_path: Path,
    operation: str,
    options: dict[str, Any],
    code: str,
    cls: type[ServerError],
) -> None:
    server = await start_server()
    still = tmp_path / "still.png"
    if operation == "gif":
        async with open_client(server.url) as client:
            await client.run("thumbnail", [media.clip], {"format": "png"}, out_dir=tmp_path)
        [still] = files(tmp_path, "*.png")
    source = still if operation == "gif" else media.silent
    with trio.fail_after(30):
        async with open_client(server.url) as client:
            with pytest.raises(cls) as caught:
                await client.run(operation, [source], options, out_dir=tmp_path)
            assert caught.value.code == code and caught.value.job_id == "job-1"
            # The connection carries on after an error.
            result = await client.run("probe", [media.clip])
    assert result.metadata["streams"][0]["type"] == "video"
    if code == "VALIDATION_ERROR":
        assert caught.value.details == {"field": "$.options.speed_factor"}


async def test_quota_exceeded(start_server: StartServer, media: Media, tmp_path: Path) -> None:
    server = await start_server(quotas={"operations": ("probe",)})
    with trio.fail_after(30):
        async with open_client(server.url) as client:
            with pytest.raises(QuotaExceeded) as caught:
                await client.run("compress", [media.clip], out_dir=tmp_path)
    assert caught.value.code == "QUOTA_EXCEEDED"
    assert caught.value.details["quota"] == "operations"


async def test_cancel_scope_cancels_the_job(
    start_server: StartServer, blocker: Path, media: Media, tmp_path: Path, workdir: Path
) -> None:
    server = await start_server()
    out = tmp_path / "out"
    out.mkdir()
    running = trio.Event()

    def watch(event: JobProgress) -> None:
        if event.phase == "processing":
            running.set()

    with trio.fail_after(30):
        async with open_client(server.url) as client:
            async with trio.open_nursery() as nursery:

                async def job() -> None:
                    await client.run(
                        "speed", [blocker], BLOCKER_OPTIONS, out_dir=out, progress=watch
                    )

                nursery.start_soon(job)
                await running.wait()
                assert (await health(server))["running"] == 1
                nursery.cancel_scope.cancel()
            # `run` returned only once the server had cancelled the job.
            state = await health(server)
            assert (state["running"], state["queued"]) == (0, 0)
            assert not client.routes  # nothing of the job is left in the client either
            result = await client.run("probe", [media.clip])  # the connection carries on
    assert result.metadata["duration"] == pytest.approx(2.0, abs=0.1)
    assert not list(out.iterdir()) and not job_dirs(workdir)


def token_for(keys: Keys) -> str:
    return jwt.encode(claims("client-1"), keys.secret, algorithm="HS256")


async def test_auth(start_server: StartServer, media: Media, tmp_path: Path) -> None:
    keys = Keys.make(tmp_path)
    server = await start_server(auth={"mode": "jwt", "secret_file": str(keys.secret_file)})
    with trio.fail_after(30):
        with pytest.raises(Unauthorized) as caught:
            async with open_client(server.url):
                pass
        assert caught.value.status == 401
        with pytest.raises(Unauthorized):
            async with open_client(server.url, token="not.a.token"):
                pass
        async with open_client(server.url, token=token_for(keys)) as client:
            result = await client.run("probe", [media.clip])
    assert [s["type"] for s in result.metadata["streams"]] == ["video", "audio"]


async def test_no_server_is_connection_failed() -> None:
    with trio.fail_after(10), pytest.raises(ConnectionFailed):
        async with open_client("ws://127.0.0.1:1/", retry=NO_RETRY):
            pass


async def test_blocking_wrapper_runs_and_cancels(
    start_server: StartServer, media: Media, blocker: Path, tmp_path: Path
) -> None:
    """`run_job_blocking` runs its own Trio loop in a worker thread (as asyncio's
    `to_thread` would), and its `cancel` event cancels the job on the server."""
    server = await start_server()
    cancel = threading.Event()
    with trio.fail_after(60):
        result = await trio.to_thread.run_sync(
            partial(run_job_blocking, server.url, "thumbnail", [media.clip], out_dir=tmp_path)
        )
        [image] = result.outputs
        assert streams(probe(image.path), "video")[0]["codec_name"] == "mjpeg"

        def processing(event: JobProgress) -> None:
            if event.phase == "processing":
                cancel.set()

        blocked = partial(
            run_job_blocking,
            server.url,
            "speed",
            [blocker],
            BLOCKER_OPTIONS,
            out_dir=tmp_path,
            progress=processing,
            cancel=cancel,
        )
        with pytest.raises(JobCancelled):
            await trio.to_thread.run_sync(blocked)
        state = await health(server)
    assert (state["running"], state["queued"]) == (0, 0)
