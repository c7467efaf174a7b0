"""Chunked transfer, disk admission and URL output (docs/protocol.md 8.4, 8.5), end to end
over real sockets with real FFmpeg.

The 300 MB test runs the server and the client as separate processes so that the
server's peak RSS can be read from /proc and the client's work does not count against
it; every other test runs the server in-process (`start_server`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import WebSocketConnection

from ffserve.service.server import Endpoints
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer
from tests.helpers import (
    JobResult,
    binary_frame,
    connect,
    duration,
    job_dirs,
    probe,
    split_frame,
    streams,
)
from tests.streaming_client import (
    MiB,
    Transfer,
    chunk,
    file_spec,
    open_raw_websocket,
    raw_frame_head,
    receive_job,
    run_chunked,
    sha256_file,
    start_message,
)

ROOT = Path(__file__).resolve().parents[2]
KiB = 1024
COPY_MKV = {"target_format": "mkv", "stream_copy": True}
CHUNKED = {"mode": "chunked"}


async def ffmpeg(*args: str) -> None:
    await trio.run_process(["ffmpeg", "-v", "error", "-y", *args])


async def make_big(path: Path, size: int) -> None:
    """About `size` bytes of 720p MJPEG in MKV, quickly: 2 s of noisy frames encoded
    once, then looped by stream copy up to `size`."""
    seed = path.with_name("seed.mkv")
    await ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=25",
        "-vf",
        "noise=alls=60:allf=t+u",
        "-frames:v",
        "50",
        "-c:v",
        "mjpeg",
        "-q:v",
        "2",
        "-pix_fmt",
        "yuvj420p",
        str(seed),
    )
    if size <= seed.stat().st_size:
        seed.rename(path)
        return
    await ffmpeg("-stream_loop", "-1", "-i", str(seed), "-c", "copy", "-fs", str(size), str(path))
    seed.unlink()


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~32 MB of MJPEG: an output far bigger than every buffer between server and client."""
    path = tmp_path_factory.mktemp("medium") / "medium.mkv"
    trio.run(make_big, path, 0)
    return path


def probe_output(result: JobResult, path: Path) -> dict[str, Any]:
    """Probe a v1 job's one binary output, written to `path`."""
    ((_, data),) = result.outputs
    path.write_bytes(data)
    return probe(path)


def check_output(transfer: Transfer, index: int = 0) -> dict[str, Any]:
    """The delivered file is whole (sha256 as announced) and playable; its probe."""
    meta = transfer.final["output_metadata"]
    path = transfer.outputs[index]
    assert transfer.sha256[index] == meta["sha256"] == sha256_file(path)
    assert path.stat().st_size == meta["size_bytes"]
    return probe(path)


async def ping(ws: WebSocketConnection) -> None:
    """The connection is still usable: a ping gets a pong (other frames are skipped)."""
    await ws.send_message(json.dumps({"type": "ping"}))
    while True:
        message = await ws.get_message()
        if isinstance(message, str) and json.loads(message)["type"] == "pong":
            return


async def recv_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), "expected a text frame, got binary"
    data: dict[str, Any] = json.loads(message)
    return data


async def expect(ws: WebSocketConnection, kind: str, **fields: Any) -> dict[str, Any]:
    """The very next frame is a `kind` message with these field values."""
    message = await recv_json(ws)
    assert message["type"] == kind, message
    for name, value in fields.items():
        assert message.get(name) == value, (name, message)
    return message


# --- a separate server process ----------------------------------------------------------


@attrs.frozen
class ServerProcess:
    process: trio.Process
    url: str

    def memory_kib(self, field: str) -> int:
        """`VmHWM` (peak RSS) or `VmRSS` of the server process, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))


@asynccontextmanager
async def server_process(tmp_path: Path, **env: str) -> AsyncIterator[ServerProcess]:
    """`python -m ffserve serve` on free loopback ports with `FFSERVE_*` overrides."""
    config = tmp_path / "config.toml"
    config.write_text("")  # not ./config.toml: the defaults plus `env`, nothing else
    log = tmp_path / "server.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FFSERVE_")},
        "FFSERVE_SERVER_HOST": "127.0.0.1",
        "FFSERVE_SERVER_PORT": "0",
        "FFSERVE_SERVER_HTTP_PORT": "0",
        "FFSERVE_SERVER_DRAIN_TIMEOUT_S": "0",
        "FFSERVE_STORAGE_TEMP_DIR": str(tmp_path / "work"),
        **env,
    }
    command = [sys.executable, "-m", "ffserve", "serve", "--config", str(config)]
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, stderr=stderr, env=environment, cwd=ROOT
        )
    try:
        with trio.fail_after(30):
            while not (found := re.search(r"listening on (ws://\S+/) \(", log.read_text())):
                assert process.poll() is None, log.read_text()
                await trio.sleep(0.05)
        yield ServerProcess(process, found.group(1))
    finally:
        process.terminate()
        with trio.move_on_after(10, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@pytest.mark.slow
async def test_300_mb_upload_and_delivery_in_bounded_memory(tmp_path: Path) -> None:
    """Chunked upload of a 300 MB file, stream-copied to MKV (as big), chunked back. The
    client is its own process, streaming from and to disk; the server's peak RSS stays
    far below the file size."""
    big, out = tmp_path / "big.mkv", tmp_path / "out"
    with trio.fail_after(60):
        await make_big(big, 300 * MiB)
    size = big.stat().st_size
    async with server_process(tmp_path) as server:
        client = [sys.executable, "-m", "tests.streaming_client", server.url, str(big), str(out)]
        with trio.fail_after(150):
            ran = await trio.run_process(client, capture_stdout=True, cwd=ROOT)
        peak_kib = server.memory_kib("VmHWM")
        assert job_dirs(tmp_path / "work") == []
    report = json.loads(ran.stdout)
    print(
        f"\n300 MB chunked transfer over loopback (client process): "
        f"upload {report['upload_mb_s']:.0f} MB/s, delivery {report['delivery_mb_s']:.0f} MB/s, "
        f"server peak RSS {peak_kib / 1024:.1f} MiB"
    )
    final = report["final"]
    assert final["type"] == "completed", final
    assert final["delivery_method"] == "chunked"
    assert report["uploaded"] == size
    assert report["upload_progress_messages"] == -(-size // MiB)  # one per chunk
    (output,) = report["outputs"]
    assert output["sha256"] == final["output_metadata"]["sha256"]
    assert output["sha256"] == await trio.to_thread.run_sync(sha256_file, Path(output["path"]))
    assert output["size"] == report["delivered"] == final["output_metadata"]["size_bytes"]
    assert output["size"] > 0.99 * size  # a remux: as big as the input
    info = probe(Path(output["path"]))
    (video,) = streams(info, "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("mjpeg", 1280, 720)
    assert duration(info) == pytest.approx(duration(probe(big)), abs=0.1)
    assert peak_kib < 150 * 1024, f"server peak RSS {peak_kib} KiB"


async def test_the_server_raises_its_open_files_limit(tmp_path: Path) -> None:
    """Connections and queued v1 outputs are open files: the service takes the hard
    RLIMIT_NOFILE as its soft limit (Debian's soft 1024 is below max_connections)."""
    # Lowered here only while the server starts, so it inherits a soft limit to raise.
    soft_before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        async with server_process(tmp_path) as server:
            limits = await trio.Path(f"/proc/{server.process.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_before, hard))
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    soft, hard_text = line.split()[3:5]
    assert soft == hard_text and soft != "512", line


# --- concurrency and back-pressure -------------------------------------------------------


async def test_chunked_job_with_two_uploads(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    """Files of one job come in order, each from offset 0; progress names the file."""
    with trio.fail_after(60):
        async with connect(server.url) as client:
            transfer = await run_chunked(
                client.ws,
                "cat",
                "concat",
                {"file_count": 2},
                [media.clip, media.long],
                tmp_path,
                chunk_bytes=64 * KiB,
                delivery=CHUNKED,
            )
    assert transfer.final["type"] == "completed", transfer.final
    progress = transfer.of("upload_progress")
    assert [p["file"] for p in progress] == sorted(p["file"] for p in progress)
    sizes = [media.clip.stat().st_size, media.long.stat().st_size]
    assert [p["received_bytes"] for p in progress if p["received_bytes"] == p["total_bytes"]] == (
        sizes
    )
    assert duration(check_output(transfer)) == pytest.approx(8.0, abs=0.2)


async def test_interleaved_chunked_uploads_on_two_connections(
    server: Endpoints, media: Media, tmp_path: Path, workdir: Path
) -> None:
    """Two uploads in 16 KiB chunks, alternating frame by frame between two connections."""
    inputs = {"a": media.long, "b": media.clip}
    chunk_bytes = 16 * KiB
    with trio.fail_after(60):
        async with connect(server.url) as a, connect(server.url) as b:
            sockets = {"a": a.ws, "b": b.ws}
            transfers = {name: Transfer(name, tmp_path / name) for name in inputs}
            for name, path in inputs.items():
                message = start_message(name, "convert", COPY_MKV, [file_spec(path)])
                await sockets[name].send_message(json.dumps({**message, "delivery": CHUNKED}))
            async with trio.open_nursery() as nursery:
                for name in inputs:
                    (tmp_path / name).mkdir()
                    nursery.start_soon(receive_job, sockets[name], transfers[name])
                data = {name: path.read_bytes() for name, path in inputs.items()}
                longest = max(len(d) for d in data.values())
                for offset in range(0, longest, chunk_bytes):
                    for name, payload in data.items():
                        if offset < len(payload):
                            piece = payload[offset : offset + chunk_bytes]
                            await sockets[name].send_message(chunk(name, offset, piece))
    for name, path in inputs.items():
        transfer = transfers[name]
        assert transfer.final["type"] == "completed", transfer.final
        received = [p["received_bytes"] for p in transfer.of("upload_progress")]
        size = path.stat().st_size
        assert received == [*range(chunk_bytes, size, chunk_bytes), size]
        assert duration(check_output(transfer)) == pytest.approx(duration(probe(path)), abs=0.1)
    assert job_dirs(workdir) == []


async def test_a_stalled_reader_does_not_block_another_client(
    start_server: StartServer, medium: Path, media: Media, tmp_path: Path
) -> None:
    """Client A stops reading after the first chunk of a 32 MB delivery; with one worker
    slot, client B's job still runs and completes. Then A reads on and gets every byte."""
    server = await start_server(jobs={"max_concurrent": 1})
    with trio.fail_after(90):
        async with connect(server.url) as a, connect(server.url) as b:
            delivery = {"mode": "chunked", "chunk_kb": 64}
            message = start_message("big", "convert", COPY_MKV, [file_spec(medium)])
            await a.ws.send_message(json.dumps({**message, "delivery": delivery}))
            digest = hashlib.sha256()
            received = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all_chunks, a.ws, "big", medium)
                while not isinstance(first := await a.ws.get_message(), bytes):
                    completed = json.loads(first)
                    assert completed["type"] != "error", completed
            assert completed["type"] == "completed", completed
            header, payload = split_frame(first)
            assert header["offset"] == 0 and not header["final"]
            digest.update(payload)
            received += len(payload)

            # A reads nothing more while B runs a whole job.
            (tmp_path / "b").mkdir()
            other = await run_chunked(
                b.ws,
                "small",
                "convert",
                COPY_MKV,
                [media.clip],
                tmp_path / "b",
                delivery=CHUNKED,
            )
            assert other.final["type"] == "completed", other.final
            check_output(other)

            while True:
                frame = await a.ws.get_message()
                assert isinstance(frame, bytes), frame
                header, payload = split_frame(frame)
                assert header["offset"] == received
                assert len(payload) <= 64 * KiB
                digest.update(payload)
                received += len(payload)
                if header["final"]:
                    break
    assert received == completed["output_metadata"]["size_bytes"]
    assert digest.hexdigest() == completed["output_metadata"]["sha256"]


async def send_all_chunks(ws: WebSocketConnection, job_id: str, path: Path) -> None:
    offset = 0
    async with await trio.open_file(path, "rb") as f:
        while data := await f.read(MiB):
            await ws.send_message(chunk(job_id, offset, data))
            offset += len(data)


async def test_chunked_delivery_of_several_outputs(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    """Thumbnails: each output's frames carry index/count and end with its own final."""
    with trio.fail_after(60):
        async with connect(server.url) as client:
            transfer = await run_chunked(
                client.ws,
                "thumbs",
                "thumbnail",
                {"count": 3, "format": "png", "width": 160},
                [media.clip],
                tmp_path,
                delivery={"mode": "chunked", "chunk_kb": 16},
            )
    final = transfer.final
    assert final["type"] == "completed", final
    assert final["delivery_method"] == "chunked"
    assert len(final["outputs"]) == len(transfer.outputs) == 3
    assert {(h["index"], h["count"]) for h in transfer.headers} == {(0, 3), (1, 3), (2, 3)}
    assert [h["index"] for h in transfer.headers if h["final"]] == [0, 1, 2]
    for meta, path, digest in zip(final["outputs"], transfer.outputs, transfer.sha256, strict=True):
        assert meta["filename"] == path.name
        assert meta["sha256"] == digest == sha256_file(path)
        (video,) = streams(probe(path), "video")
        assert (video["codec_name"], video["width"]) == ("png", 160)


async def test_delivery_chunks_stay_within_the_server_limit(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    """limits.chunk_kb bounds chunks both ways (config.toml): a client asking for bigger
    delivery chunks is refused or gets chunks of at most the limit, because the outbound
    queue holds `outbound_queue` chunks per connection in memory."""
    server = await start_server(limits=SMALL_CHUNKS)
    with trio.fail_after(60):
        async with connect(server.url) as client:
            transfer = await run_chunked(
                client.ws,
                "j",
                "convert",
                COPY_MKV,
                [media.long],
                tmp_path,
                chunk_bytes=LIMIT,
                delivery={"mode": "chunked", "chunk_kb": 1024},
            )
    if transfer.final["type"] == "error":
        assert transfer.final["code"] == "VALIDATION_ERROR", transfer.final
        return
    check_output(transfer)
    assert max(transfer.payloads) <= LIMIT


async def test_an_upload_that_stops_times_out(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    server = await start_server(jobs={"input_timeout_s": 0.5})
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            spec = [{"size": 1000}]
            await ws.send_message(
                json.dumps(start_message("j", "speed", {"speed_factor": 2.0}, spec))
            )
            await expect(ws, "ack")
            await ws.send_message(chunk("j", 0, b"\0" * 500))
            await expect(ws, "upload_progress", received_bytes=500, percentage=50.0)
            await expect(ws, "error", job_id="j", code="TIMEOUT")
            assert job_dirs(workdir) == []
            await ping(ws)


# --- cancel and disconnect mid-upload ----------------------------------------------------


async def test_cancel_mid_upload_removes_the_partial_file(
    server: Endpoints, medium: Path, workdir: Path
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            size = (await trio.Path(medium).stat()).st_size
            await ws.send_message(
                json.dumps(start_message("c", "convert", COPY_MKV, [{"size": size}]))
            )
            await expect(ws, "ack", job_id="c")
            data = (await trio.Path(medium).read_bytes())[: 3 * 64 * KiB]
            for offset in range(0, len(data), 64 * KiB):
                await ws.send_message(chunk("c", offset, data[offset : offset + 64 * KiB]))
                await expect(ws, "upload_progress", job_id="c", received_bytes=offset + 64 * KiB)
            (partial,) = job_dirs(workdir)
            assert [p.stat().st_size for p in partial.iterdir()] == [len(data)]
            # More chunks in flight, then the cancel, then chunks after it.
            for offset in range(len(data), len(data) + 8 * MiB, MiB):
                await ws.send_message(chunk("c", offset, b"\0" * MiB))
            await ws.send_message(json.dumps({"type": "cancel_job", "job_id": "c"}))
            for offset in range(len(data) + 8 * MiB, len(data) + 16 * MiB, MiB):
                await ws.send_message(chunk("c", offset, b"\0" * MiB))
            seen = await messages_until_pong(ws)
    codes = [m.get("code") for m in seen if m["type"] == "error"]
    assert "JOB_CANCELLED" in codes, seen
    assert set(codes) <= {"JOB_CANCELLED", "INVALID_BINARY"}, seen
    assert job_dirs(workdir) == []


async def messages_until_pong(ws: WebSocketConnection) -> list[dict[str, Any]]:
    """Ping, then every message up to the pong (binary frames are not expected)."""
    await ws.send_message(json.dumps({"type": "ping"}))
    seen = []
    while (message := await recv_json(ws))["type"] != "pong":
        seen.append(message)
    return seen


async def test_disconnect_mid_chunk_removes_the_partial_file(
    server: Endpoints, workdir: Path
) -> None:
    """The client goes away halfway through a chunk's frame."""
    with trio.fail_after(30):
        client = await open_raw_websocket(server.host, server.port)
        try:
            await client.send(
                json.dumps(start_message("d", "speed", {"speed_factor": 2.0}, [{"size": 4 * MiB}]))
            )
            assert (await client.receive_json())["type"] == "ack"
            await client.send(chunk("d", 0, b"\1" * MiB))
            progress = await client.receive_json()
            assert progress["type"] == "upload_progress", progress
            assert len(job_dirs(workdir)) == 1
            frame = chunk("d", MiB, b"\2" * MiB)
            await client.stream.send_all(raw_frame_head(len(frame)) + frame[: len(frame) // 2])
        finally:
            await client.stream.aclose()
        while job_dirs(workdir):  # noqa: ASYNC110 (no event for "the server removed a dir")
            await trio.sleep(0.02)


async def test_a_v1_upload_is_on_disk_while_it_arrives_and_removed_on_disconnect(
    server: Endpoints, workdir: Path
) -> None:
    """Half of a v1 upload's one message is sent: its bytes are already in the job's input
    file (streamed, not held), and going away mid-message removes it."""
    with trio.fail_after(30):
        client = await open_raw_websocket(server.host, server.port)
        try:
            await client.send(json.dumps(start_message("v", "speed", {"speed_factor": 2.0}, None)))
            assert (await client.receive_json())["type"] == "ack"
            frame = binary_frame_with("v", b"\3" * (8 * MiB), {})
            await client.stream.send_all(raw_frame_head(len(frame)) + frame[: 4 * MiB])
            inputs: list[Path] = []
            while not inputs or inputs[0].stat().st_size < 3 * MiB:
                inputs = [d / "input" for d in job_dirs(workdir) if (d / "input").exists()]
                await trio.sleep(0.02)
        finally:
            await client.stream.aclose()
        while job_dirs(workdir):  # noqa: ASYNC110 (no event for "the server removed a dir")
            await trio.sleep(0.02)


def open_job_files(workdir: Path) -> list[str]:
    """Files in job dirs under the server's temp root that this (server) process holds
    open (the root itself is held open, locked, for as long as the server runs)."""
    root = str(workdir)
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(root) and "/job-" in target:
                found.append(target)
    return found


async def test_v1_outputs_go_out_from_open_files_closed_when_the_client_goes(
    server: Endpoints, medium: Path, workdir: Path
) -> None:
    """Two v1 outputs of ~32 MB for a client that reads nothing: each job's dir is gone,
    its output held only by an open file (one being sent, one queued, not in memory);
    when the client goes away both files are closed."""
    data = await trio.Path(medium).read_bytes()
    with trio.fail_after(60):
        client = await open_raw_websocket(server.host, server.port)
        try:
            for job_id in ("a", "b"):
                await client.send(json.dumps(start_message(job_id, "convert", COPY_MKV, None)))
                await client.send(binary_frame_with(job_id, data, {}))
            while len(held := open_job_files(workdir)) < 2 or job_dirs(workdir):  # noqa: ASYNC110
                await trio.sleep(0.05)
            assert all(name.endswith(" (deleted)") for name in held), held
        finally:
            await client.stream.aclose()
        while open_job_files(workdir):  # noqa: ASYNC110 (no event for "a file was closed")
            await trio.sleep(0.05)


# --- bad input ---------------------------------------------------------------------------

SMALL_CHUNKS = {"chunk_kb": 16}
LIMIT = 16 * KiB


@pytest.mark.parametrize(
    ("case", "offset", "length"),
    [
        ("ahead", 2 * LIMIT, LIMIT),
        ("overlapping", LIMIT // 2, LIMIT),
        ("repeated", 0, LIMIT),
        ("too big", LIMIT, LIMIT + 1),
        ("empty", LIMIT, 0),
        ("no offset", None, LIMIT),
        ("offset not an integer", str(LIMIT), LIMIT),
    ],
)
async def test_a_refused_chunk_leaves_the_upload_going(
    start_server: StartServer,
    media: Media,
    tmp_path: Path,
    case: str,
    offset: Any,
    length: int,
) -> None:
    """INVALID_CHUNK with the offset the server expects; then the upload carries on."""
    server = await start_server(limits=SMALL_CHUNKS)
    data = media.clip.read_bytes()
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            message = start_message("j", "convert", COPY_MKV, [file_spec(media.clip)])
            await ws.send_message(json.dumps({**message, "delivery": CHUNKED}))
            await expect(ws, "ack")
            await ws.send_message(chunk("j", 0, data[:LIMIT]))
            await expect(ws, "upload_progress", received_bytes=LIMIT)
            header = {} if offset is None else {"offset": offset}
            bad = b"\x55" * length
            await ws.send_message(binary_frame_with("j", bad, header))
            error = await expect(ws, "error", job_id="j", code="INVALID_CHUNK")
            assert error["details"]["expected_offset"] == LIMIT, error
            await ping(ws)
            transfer = Transfer("j", tmp_path)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_job, ws, transfer)
                for at in range(LIMIT, len(data), LIMIT):
                    await ws.send_message(chunk("j", at, data[at : at + LIMIT]))
    assert transfer.final["type"] == "completed", transfer.final
    assert duration(check_output(transfer)) == pytest.approx(2.0, abs=0.1)


def binary_frame_with(job_id: str, payload: bytes, header: dict[str, Any]) -> bytes:
    return binary_frame(job_id, "in.bin", payload, **header)


async def test_bytes_past_the_announced_size_end_the_job(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    """A fast uploader that sends far more than it announced: TOO_LARGE, the file is
    removed, and the frames that were already on their way do not wedge the connection."""
    server = await start_server(limits=SMALL_CHUNKS)
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            announced = {"size": 2 * LIMIT - 100}
            await ws.send_message(json.dumps(start_message("j", "convert", COPY_MKV, [announced])))
            await expect(ws, "ack")
            for n in range(20):  # pipelined, without waiting for acknowledgements
                await ws.send_message(chunk("j", n * LIMIT, b"\7" * LIMIT))
            seen = await messages_until_pong(ws)
            errors = [m for m in seen if m["type"] == "error"]
            assert errors[0]["code"] == "TOO_LARGE", seen
            assert errors[0]["details"] == {"announced_size": announced["size"]}
            assert {e["code"] for e in errors[1:]} <= {"INVALID_BINARY"}, seen
            assert job_dirs(workdir) == []
            await ping(ws)


async def test_checksum_mismatch_ends_the_job(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    server = await start_server(limits=SMALL_CHUNKS)
    data = media.clip.read_bytes()
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            wrong = hashlib.sha256(data + b"x").hexdigest()
            spec = {"size": len(data), "sha256": wrong.upper()}
            await ws.send_message(json.dumps(start_message("j", "convert", COPY_MKV, [spec])))
            await expect(ws, "ack")
            for at in range(0, len(data), LIMIT):
                await ws.send_message(chunk("j", at, data[at : at + LIMIT]))
                end = min(at + LIMIT, len(data))
                await expect(ws, "upload_progress", received_bytes=end, total_bytes=len(data))
            await expect(ws, "error", job_id="j", code="CHECKSUM_MISMATCH")
            assert job_dirs(workdir) == []
            await ping(ws)


async def test_a_chunk_after_the_upload_is_complete_is_refused(
    server: Endpoints, blocker: Path
) -> None:
    """Once every announced byte is in and the job is processing, another chunk gets
    INVALID_BINARY (and the job carries on)."""
    data = await trio.Path(blocker).read_bytes()
    with trio.fail_after(60):
        async with connect(server.url) as client:
            ws = client.ws
            spec = {"size": len(data)}
            message = start_message("p", "speed", BLOCKER_OPTIONS, [spec])
            await ws.send_message(json.dumps(message))
            await expect(ws, "ack")
            for at in range(0, len(data), MiB):
                await ws.send_message(chunk("p", at, data[at : at + MiB]))
            while (await recv_json(ws)).get("stage") != "processing":
                pass
            await ws.send_message(chunk("p", len(data), b"late"))
            error = await expect(ws, "error", job_id="p", code="INVALID_BINARY")
            assert "not waiting for an upload" in error["message"]
            await ws.send_message(json.dumps({"type": "cancel_job", "job_id": "p"}))
            while (message := await recv_json(ws))["type"] != "error":
                assert message["type"] == "progress", message
            assert message["code"] == "JOB_CANCELLED"


async def test_a_chunk_for_a_finished_job(server: Endpoints, media: Media, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            transfer = await run_chunked(ws, "j", "convert", COPY_MKV, [media.clip], tmp_path)
            assert transfer.final["type"] == "completed", transfer.final
            assert transfer.final["delivery_method"] == "binary"
            await ws.get_message()  # the v1 output frame
            await ws.send_message(chunk("j", media.clip.stat().st_size, b"late"))
            await expect(ws, "error", job_id="j", code="INVALID_BINARY")
            await ping(ws)


@pytest.mark.parametrize(
    ("operation", "options", "count"),
    [
        ("concat", {"file_count": 2}, 1),
        ("concat", {"file_count": 3}, 4),
        ("speed", {"speed_factor": 2.0}, 2),
    ],
)
async def test_file_list_must_match_the_operation(
    server: Endpoints, operation: str, options: dict[str, Any], count: int, workdir: Path
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            files = [{"size": 1000}] * count
            await ws.send_message(json.dumps(start_message("j", operation, options, files)))
            error = await expect(ws, "error", job_id="j", code="VALIDATION_ERROR")
            assert error["details"]["field"] == "$.input.files", error
            assert job_dirs(workdir) == []
            await ping(ws)


@pytest.mark.parametrize(
    ("sections", "size"),
    [
        ({"limits": {"max_upload_mb": 1}}, MiB + 1),
        ({"storage": {"reserve_mb": 1e9}}, 1),  # more reserve than any disk has
    ],
    ids=["over the limit", "over free disk"],
)
async def test_an_upload_too_big_is_refused_before_any_byte(
    start_server: StartServer, workdir: Path, sections: dict[str, Any], size: int
) -> None:
    server = await start_server(**sections)
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            await ws.send_message(
                json.dumps(start_message("j", "speed", {"speed_factor": 2.0}, [{"size": size}]))
            )
            error = await expect(ws, "error", job_id="j", code="TOO_LARGE")
            assert job_dirs(workdir) == []
            # A chunk already on its way for the refused job is dropped without a reply:
            # the refusal was the job's last word, so the next frame is the pong.
            await ws.send_message(chunk("j", 0, b"\0" * 100))
            await ws.send_message(json.dumps({"type": "ping"}))
            assert json.loads(await ws.get_message()) == {"type": "pong"}
    assert "/tmp" not in json.dumps(error)


async def test_announced_sizes_of_live_jobs_count_against_free_disk(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs that each fit the disk but not together: the second waits its turn."""
    free = 100 * MiB

    def disk_usage(path: Any) -> Any:
        return type("usage", (), {"total": 10 * free, "used": 9 * free, "free": free})()

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)  # as ffserve.session.connection sees it
    server = await start_server(storage={"reserve_mb": 10})
    files = [{"size": 60 * MiB}]
    with trio.fail_after(30):
        async with connect(server.url) as client:
            ws = client.ws
            await ws.send_message(
                json.dumps(start_message("a", "speed", {"speed_factor": 2.0}, files))
            )
            await expect(ws, "ack", job_id="a")
            await ws.send_message(
                json.dumps(start_message("b", "speed", {"speed_factor": 2.0}, files))
            )
            error = await expect(ws, "error", job_id="b", code="TOO_LARGE")
            assert str(60 * MiB) in error["message"]  # what it asked for, not what is free
            assert "details" not in error and str(30 * MiB) not in error["message"]
            await ws.send_message(json.dumps({"type": "cancel_job", "job_id": "a"}))
            await expect(ws, "error", job_id="a", code="JOB_CANCELLED")
            await ws.send_message(
                json.dumps(start_message("b", "speed", {"speed_factor": 2.0}, files))
            )
            await expect(ws, "ack", job_id="b")


async def test_a_v1_upload_over_the_message_limit_gets_too_large_in_band(
    start_server: StartServer, media: Media, medium: Path, workdir: Path
) -> None:
    """Without the extension a file is one message: past `max_message_mb` the job ends
    with TOO_LARGE naming the chunked mode while the message still arrives; the rest of
    it is dropped unread, nothing stays on disk, and the connection goes on (8.4)."""
    server = await start_server(limits={"max_message_mb": 1})
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("v1", "convert", COPY_MKV)
            await expect(client.ws, "ack")
            data = (await trio.Path(medium).read_bytes())[: 3 * MiB]
            await client.ws.send_message(binary_frame_with("v1", data, {}))
            error = await expect(client.ws, "error", job_id="v1", code="TOO_LARGE")
            assert "chunks" in error["message"] and "input.files" in error["message"]
            assert error["details"] == {"max_message_bytes": MiB}
            assert job_dirs(workdir) == []
            result = await client.run("thumbnail", media.clip, {"timestamp": 0.5}, job_id="v1")
            assert result.final["type"] == "completed", result.final
    (image,) = streams(probe_output(result, workdir / "thumb.png"), "video")
    assert (image["width"], image["height"]) == (640, 360)


@pytest.mark.slow
async def test_a_200_mb_v1_upload_and_delivery_in_bounded_memory(tmp_path: Path) -> None:
    """A v1 job moves each file as one 200 MB WebSocket message. The server writes the
    upload as it arrives and sends the output from disk as it goes out, holding neither
    (trio-websocket's whole-message join peaked at 446 MiB for the upload alone)."""
    big = tmp_path / "big.mkv"
    with trio.fail_after(60):
        await make_big(big, 200 * MiB)
    data = await trio.Path(big).read_bytes()
    async with server_process(tmp_path) as server:
        with trio.fail_after(120):
            async with connect(server.url) as client:
                await client.start("v1", "convert", COPY_MKV)
                await client.ws.send_message(binary_frame_with("v1", data, {}))
                del data
                result = await client.collect("v1")
        peak_kib = server.memory_kib("VmHWM")
        assert job_dirs(tmp_path / "work") == []
    print(f"\n200 MB v1 upload and delivery: server peak RSS {peak_kib / 1024:.1f} MiB")
    assert result.final["type"] == "completed", result.final
    info = probe_output(result, tmp_path / "out.mkv")
    (video,) = streams(info, "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("mjpeg", 1280, 720)
    assert duration(info) == pytest.approx(duration(probe(big)), abs=0.1)
    assert (tmp_path / "out.mkv").stat().st_size == result.final["output_metadata"]["size_bytes"]
    assert result.final["output_metadata"]["size_bytes"] > 0.99 * big.stat().st_size
    assert peak_kib < 150 * 1024, f"server peak RSS {peak_kib} KiB"


# --- URL output --------------------------------------------------------------------------


@attrs.define
class PutServer:
    """An HTTP/1.1 server on loopback that takes PUTs into `dest` and answers 200, 500,
    or 200 with a body that never ends; or stalls (reads the request head, then nothing)."""

    dest: Path
    mode: str = "ok"
    port: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = attrs.Factory(list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, body = buffer.split(b"\r\n\r\n", 1)
            line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
            self.requests.append((method, target, headers))
            if self.mode == "stall":
                await trio.sleep_forever()
            remaining = int(headers.get("content-length", "0")) - len(body)
            async with await trio.open_file(self.dest, "wb") as f:
                await f.write(body)
                while remaining > 0:
                    data = await stream.receive_some(min(remaining, 65536))
                    if not data:
                        return
                    await f.write(data)
                    remaining -= len(data)
            if self.mode == "endless":  # a 200 whose body never ends
                await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                with contextlib.suppress(trio.BrokenResourceError):  # until the client hangs up
                    while True:
                        await stream.send_all(b"10000\r\n" + b"z" * 0x10000 + b"\r\n")
                return
            status = "500 Internal Server Error" if self.mode == "fail" else "200 OK"
            await stream.send_all(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n".encode())


async def start_put_server(nursery: trio.Nursery, dest: Path, mode: str = "ok") -> PutServer:
    put = PutServer(dest, mode)
    (listener,) = await nursery.start(partial(trio.serve_tcp, put.handle, 0, host="127.0.0.1"))
    put.port = listener.socket.getsockname()[1]
    return put


async def output_job(
    server: Endpoints, media: Media, tmp_path: Path, url: str, **fields: Any
) -> Transfer:
    async with connect(server.url) as client:
        transfer = await run_chunked(
            client.ws,
            "out",
            "convert",
            COPY_MKV,
            [media.clip],
            tmp_path,
            output={"url": url},
            **fields,
        )
        await ping(client.ws)
    return transfer


async def test_url_output_puts_the_result(
    start_server: StartServer, nursery: trio.Nursery, media: Media, tmp_path: Path, workdir: Path
) -> None:
    put = await start_put_server(nursery, tmp_path / "put.mkv")
    server = await start_server(security={"allow_private_urls": True, "url_ports": [put.port]})
    with trio.fail_after(30):
        transfer = await output_job(
            server, media, tmp_path, put.url("/bucket/out.mkv?X-Amz-Signature=secret")
        )
    final = transfer.final
    assert final["type"] == "completed", final
    assert final["delivery_method"] == "url"
    meta = final["output_metadata"]
    assert meta["url"] == put.url("/bucket/out.mkv")
    assert transfer.headers == []  # nothing came back over the socket
    ((method, target, headers),) = put.requests
    assert (method, target) == ("PUT", "/bucket/out.mkv?X-Amz-Signature=secret")
    assert headers["content-length"] == str(meta["size_bytes"])
    assert headers["content-type"] == "video/x-matroska"
    assert "transfer-encoding" not in headers
    assert sha256_file(put.dest) == meta["sha256"]
    assert duration(probe(put.dest)) == pytest.approx(2.0, abs=0.1)
    assert job_dirs(workdir) == []


async def test_url_output_ignores_the_response_body(
    start_server: StartServer, nursery: trio.Nursery, media: Media, tmp_path: Path
) -> None:
    """The answer to the PUT is judged by its status alone: a body (here endless) is
    neither read into memory nor waited for."""
    put = await start_put_server(nursery, tmp_path / "put.mkv", "endless")
    server = await start_server(security={"allow_private_urls": True, "url_ports": [put.port]})
    with trio.fail_after(30):
        transfer = await output_job(server, media, tmp_path, put.url("/out.mkv"))
    assert transfer.final["type"] == "completed", transfer.final
    assert sha256_file(put.dest) == transfer.final["output_metadata"]["sha256"]


@pytest.mark.parametrize("mode", ["fail", "stall"])
async def test_url_output_failures(
    start_server: StartServer,
    nursery: trio.Nursery,
    media: Media,
    tmp_path: Path,
    workdir: Path,
    mode: str,
) -> None:
    put = await start_put_server(nursery, tmp_path / "put.mkv", mode)
    security = {"allow_private_urls": True, "url_read_timeout_s": 1.0, "url_ports": [put.port]}
    server = await start_server(security=security)
    with trio.fail_after(30):
        transfer = await output_job(server, media, tmp_path, put.url("/out.mkv"))
    assert transfer.final["code"] == "URL_UPLOAD_FAILED", transfer.final
    assert transfer.final["job_id"] == "out"
    assert ("500" in transfer.final["message"]) == (mode == "fail"), transfer.final
    assert len(put.requests) == 1
    assert job_dirs(workdir) == []


async def test_url_output_to_loopback_is_forbidden_by_default(
    start_server: StartServer, nursery: trio.Nursery, media: Media, tmp_path: Path
) -> None:
    put = await start_put_server(nursery, tmp_path / "put.mkv")
    # Its port allowed: the address rule is what refuses it.
    server = await start_server(security={"url_ports": [put.port]})
    with trio.fail_after(30):
        transfer = await output_job(server, media, tmp_path, put.url("/out.mkv"))
    assert transfer.final["code"] == "URL_FORBIDDEN", transfer.final
    assert put.requests == []


async def test_url_output_to_another_port_is_forbidden(
    start_server: StartServer, nursery: trio.Nursery, media: Media, tmp_path: Path
) -> None:
    """Only ports 80 and 443 by default, whatever the address rule allows: otherwise an
    output URL could PUT the client's bytes to any service on any host (an open relay).
    Refused at start_job, before any work."""
    put = await start_put_server(nursery, tmp_path / "put.mkv")
    server = await start_server(security={"allow_private_urls": True})
    with trio.fail_after(30):
        transfer = await output_job(server, media, tmp_path, put.url("/out.mkv"))
    assert transfer.final["code"] == "URL_FORBIDDEN", transfer.final
    assert transfer.final["job_id"] == "out"
    assert f"port {put.port}" in transfer.final["message"]
    assert "80, 443" in transfer.final["message"]
    assert put.requests == []


async def test_url_output_and_delivery_exclude_each_other(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        transfer = await output_job(
            server, media, tmp_path, "https://bucket.example/out.mkv", delivery=CHUNKED
        )
    assert transfer.final["code"] == "VALIDATION_ERROR", transfer.final
    assert transfer.final["details"]["field"] == "$.output"
