"""Drive a running ffserve image from the host: one real v1 job, probed; then a long job
whose FFmpeg is inspected inside the container. Used by `just image-test`.

    python scripts/image_job.py ws://127.0.0.1:18080/ CONTAINER [TOKEN]
    python scripts/image_job.py hold ws://127.0.0.1:18080/ [TOKEN]   # a job for the drain
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from ffserve.client import open_client


def frame(job_id: str, name: str, data: bytes) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": name}).encode()
    return struct.pack(">I", len(header)) + header + data


async def make_silence(work: Path) -> Path:
    """An hour of 16 kHz silence as FLAC (small): speed 0.25 keeps FFmpeg busy on it."""
    silence = work / "silence.flac"
    await trio.run_process(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3600",
         "-c:a", "flac", str(silence)],
    )  # fmt: skip
    return silence


async def start_long_job(ws: WebSocketConnection, job_id: str, silence: Path) -> None:
    """Start a long `speed` job on `silence` and return once its FFmpeg runs."""
    start = {"type": "start_job", "job_id": job_id, "operation": "speed",
             "input": {"source": "upload"}, "options": {"speed_factor": 0.25}}  # fmt: skip
    await ws.send_message(json.dumps(start))
    await ws.send_message(frame(job_id, "silence.flac", await trio.Path(silence).read_bytes()))
    while '"processing"' not in str(await ws.get_message()):
        pass


async def run(url: str, container: str, token: str | None = None) -> None:
    work = Path(tempfile.mkdtemp(prefix="image-test-"))
    clip = work / "clip.mp4"
    await trio.run_process(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2",
         "-c:v", "libx264", str(clip)],
    )  # fmt: skip
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    # The Python client (ffserve.client): chunked upload and delivery, sha256 checked.
    async with open_client(url, token) as client:
        result = await client.run(
            "thumbnail", [clip], {"timestamp": 1.0, "width": 320}, out_dir=work
        )
    (work / "thumb.jpg").write_bytes(result.outputs[0].path.read_bytes())
    print("  <- completed:", result.metadata["filename"], result.metadata["size_bytes"], "bytes")
    probe = await trio.run_process(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
         str(work / "thumb.jpg")],
        capture_stdout=True,
    )  # fmt: skip
    stream = json.loads(probe.stdout)["streams"][0]
    print("thumbnail probed:", stream)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 320, 180)

    # A long job: its FFmpeg, inside the container, must be sandboxed.
    silence = await make_silence(work)
    async with open_websocket_url(url, max_message_size=64 << 20, extra_headers=headers) as ws:
        await start_long_job(ws, "long", silence)
        await trio.sleep(0.5)
        script = (
            'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = ffmpeg ] && '
            "grep -E '^(Uid|NoNewPrivs|Seccomp|CapEff):' $p/status && "
            "echo net $(readlink $p/ns/net) server $(readlink /proc/1/ns/net); done; true"
        )
        done = await trio.run_process(
            ["podman", "exec", container, "sh", "-c", script], capture_stdout=True
        )
        inside = done.stdout.decode()
        print("the running FFmpeg, seen inside the container:\n" + inside)
        assert "NoNewPrivs:\t1" in inside and "Seccomp:\t2" in inside, inside
        net = inside.split("net ", 1)[1].split()
        assert net[0] != net[2], "FFmpeg shares the server's network namespace"
        print("long job confirmed sandboxed; closing the connection cancels it")


async def hold(url: str, token: str | None) -> None:
    """Keep a job running while the server is stopped: print RUNNING once FFmpeg runs,
    then what the server says before it closes (`podman stop` must drain, not kill)."""
    work = Path(tempfile.mkdtemp(prefix="image-drain-"))
    silence = await make_silence(work)
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    async with open_websocket_url(url, max_message_size=64 << 20, extra_headers=headers) as ws:
        await start_long_job(ws, "drained", silence)
        print("RUNNING", flush=True)
        try:
            while True:
                message = await ws.get_message()
                # Within the drain deadline the job may finish (completed, then its
                # output); past it, it is cut (error SHUTTING_DOWN). Then close 1001.
                said = json.loads(message) if isinstance(message, str) else {}
                if said.get("type") in ("error", "completed"):
                    print("server said:", said["type"], said.get("code", ""), flush=True)
        except ConnectionClosed as closed:
            reason = closed.reason
            print("closed:", reason.code if reason else None, reason.reason if reason else "")


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        trio.run(hold, sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        trio.run(run, sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
