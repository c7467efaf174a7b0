"""Bounds on what FFmpeg is asked to do, end to end: each refused or cut off with its code.

Real FFmpeg in the real sandbox. Each input here is one that plain FFmpeg would process
(or, for the running job, one that shows what the sandbox did to FFmpeg), so each test
fails if its bound is taken away.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from tests.conftest import BLOCKER_OPTIONS, Media, StartServer
from tests.helpers import connect, descendants, ffmpeg, job_dirs, probe, streams, wait_for

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def lavfi(path: Path, *args: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1", *args, str(path))
    return path


async def error_of(
    server_url: str, operation: str, path: Path, options: dict[str, object]
) -> dict[str, object]:
    async with connect(server_url) as client:
        result = await client.run(operation, path, options)
    final = result.messages[-1]
    assert final["type"] == "error", final
    return final


async def test_an_output_is_cut_off_at_the_cap_while_written(
    start_server: StartServer, tmp_path: Path, workdir: Path
) -> None:
    """A tiny FLAC of 60 s of silence makes an 11 MB WAV: with a 1 MiB output cap FFmpeg
    is stopped when the file reaches it (RLIMIT_FSIZE), not after it wrote it all."""
    flac = tmp_path / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "60", "-c:a", "flac", str(flac))
    assert flac.stat().st_size < 200_000
    server = await start_server(limits={"max_output_mb": 1})
    with trio.fail_after(60):
        error = await error_of(server.url, "extract_audio", flac, {"format": "wav"})
    assert error["code"] == "TOO_LARGE"
    assert error["details"] == {"limit": "output_bytes", "max_output_bytes": 1024 * 1024}
    assert job_dirs(workdir) == []


async def test_too_many_streams_are_refused(start_server: StartServer, tmp_path: Path) -> None:
    many = tmp_path / "many.mkv"
    maps = [arg for _ in range(5) for arg in ("-map", "0:v")]
    lavfi(many, *maps, "-c:v", "mpeg4")
    assert len(probe(many)["streams"]) == 5
    server = await start_server(limits={"max_streams": 4})
    with trio.fail_after(60):
        error = await error_of(server.url, "thumbnail", many, {"timestamp": 0.1})
    assert error["code"] == "TOO_LARGE" and "5 streams" in str(error["message"])


async def test_an_absurd_frame_rate_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    fast = lavfi(tmp_path / "fast.mp4", "-r", "2000", "-c:v", "mpeg4")
    assert streams(probe(fast), "video")[0]["avg_frame_rate"] == "2000/1"
    server = await start_server()
    with trio.fail_after(60):
        error = await error_of(server.url, "thumbnail", fast, {"timestamp": 0.1})
    assert error["code"] == "TOO_LARGE" and "frames per second" in str(error["message"])


@pytest.mark.parametrize("codec", ["utvideo", "ffv1"])
async def test_a_decoder_off_the_allowlist_is_never_reached(
    start_server: StartServer, tmp_path: Path, codec: str
) -> None:
    """Plain FFmpeg decodes these Matroska files; ffserve's FFmpeg and ffprobe may not."""
    exotic = lavfi(tmp_path / f"{codec}.mkv", "-c:v", codec)
    assert streams(probe(exotic), "video")[0]["codec_name"] == codec
    server = await start_server()
    with trio.fail_after(60):
        error = await error_of(server.url, "thumbnail", exotic, {"timestamp": 0.1})
    assert error["code"] == "INVALID_MEDIA"


async def test_a_frame_larger_than_the_cap_is_not_decoded(
    start_server: StartServer, tmp_path: Path
) -> None:
    """An MPEG-TS whose stream probes as 160x120 and then switches to 1280x720: with a
    320x240 cap the large frames are not decoded (-max_pixels), so no output shows them."""
    small = lavfi(tmp_path / "small.ts", "-c:v", "mpeg2video", "-f", "mpegts")
    large = tmp_path / "large.ts"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=2",
        "-c:v", "mpeg2video", "-f", "mpegts", str(large),
    )  # fmt: skip
    switching = tmp_path / "switching.ts"
    switching.write_bytes(small.read_bytes() + large.read_bytes())
    server = await start_server(limits={"max_width": 320, "max_height": 240})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run("thumbnail", switching, {"timestamp": 2.0})
    final = result.messages[-1]
    if final["type"] == "completed":
        meta = final["output_metadata"]
        assert (meta["width"], meta["height"]) == (160, 120), meta  # never a 1280x720 frame
    else:
        assert final["code"] in ("JOB_FAILED", "TOO_LARGE"), final


async def test_a_running_ffmpeg_is_confined(
    start_server: StartServer, blocker: Path, media: Media
) -> None:
    """/proc of the server's running FFmpeg: no new privileges, seccomp filtering, and
    network and mount namespaces that are not the server's."""
    server = await start_server(jobs={"max_concurrent": 1})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            await client.start("b", "speed", BLOCKER_OPTIONS)
            await client.upload("b", blocker)
            await wait_for(client, "b", "progress", stage="processing")
            pid = await running_ffmpeg()
            status = proc_status(pid)
            assert status["NoNewPrivs"].strip() == "1"
            assert status["Seccomp"].strip() == "2"
            assert int(status["CapEff"].strip(), 16) == 0
            for ns in ("net", "mnt", "pid", "ipc"):
                assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
            await client.send({"type": "cancel_job", "job_id": "b"})
            assert (await client.collect("b")).messages[-1]["code"] == "JOB_CANCELLED"
            assert not proc_status(pid)  # the whole sandbox is gone


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict; empty once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines())


async def running_ffmpeg() -> int:
    while True:
        for pid in descendants(os.getpid()):
            if proc_status(pid).get("Name", "").strip() == "ffmpeg":
                return pid
        await trio.sleep(0.02)


async def test_a_v1_upload_is_held_to_the_disk_reserve(
    start_server: StartServer, tmp_path: Path, workdir: Path
) -> None:
    """A v1 upload announces no size, so it is admitted piece by piece as it is written:
    with the reserve set to leave about 1 MiB free, a 32 MiB upload is refused."""
    upload = tmp_path / "big.mp4"
    upload.write_bytes(bytes(32 * 1024 * 1024))  # far past the 1 MiB left, whatever else runs
    free_mib = shutil.disk_usage(tmp_path).free // (1024 * 1024)  # workdir's disk too
    server = await start_server(storage={"reserve_mb": free_mib - 1})
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run("thumbnail", upload, {"timestamp": 0.1})
    final = result.messages[-1]
    assert final["code"] == "TOO_LARGE" and "disk space" in str(final["message"]), final
    assert job_dirs(workdir) == []


async def test_a_job_past_the_memory_limit_ends_with_its_code(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    """A 2 s clip scaled to 4096x4096 needs more than 400 MiB of address space for x264's
    frames: FFmpeg's allocation fails inside its limit, and the job says why."""
    server = await start_server(sandbox={"memory_mb": 400})
    options = {"filters": [{"type": "scale", "width": 4096, "height": 4096}]}
    with trio.fail_after(120):
        error = await error_of(server.url, "filter", media.clip, options)
    assert error["code"] == "TOO_LARGE" and error["details"] == {"limit": "memory"}, error
    assert job_dirs(workdir) == []


async def test_options_asking_for_too_much_work_are_refused(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    """A 2 s clip scaled to 8192x8192 (6.4 GB and 96 minutes of x264, measured by the
    security review) is refused before FFmpeg starts; 1280x720 runs."""
    server = await start_server()
    big = {"filters": [{"type": "scale", "width": 8192, "height": 8192}]}
    with trio.fail_after(60):
        error = await error_of(server.url, "filter", media.clip, big)
        assert error["code"] == "TOO_LARGE" and error["details"] == {"limit": "frame_size"}
        async with connect(server.url) as client:
            fine = {"filters": [{"type": "scale", "width": 1280, "height": 720}]}
            result = await client.run("filter", media.clip, fine)
    meta = result.messages[-1]["output_metadata"]
    assert (meta["width"], meta["height"]) == (1280, 720)
    assert job_dirs(workdir) == []
