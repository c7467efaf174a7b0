"""Drive a running ffserve image from the host: one real v1 job, probed; then a long job
whose FFmpeg is inspected inside the container. Used by `just image-test`.

    python scripts/image_job.py ws://127.0.0.1:18080/ CONTAINER [TOKEN]
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

import trio
from trio_websocket import open_websocket_url


def frame(job_id: str, name: str, data: bytes) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": name}).encode()
    return struct.pack(">I", len(header)) + header + data


async def run(url: str, container: str, token: str | None = None) -> None:
    work = Path(tempfile.mkdtemp(prefix="image-test-"))
    clip = work / "clip.mp4"
    await trio.run_process(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2",
         "-c:v", "libx264", str(clip)],
    )  # fmt: skip
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    async with open_websocket_url(url, max_message_size=64 << 20, extra_headers=headers) as ws:
        start = {"type": "start_job", "job_id": "t", "operation": "thumbnail",
                 "input": {"source": "upload"},
                 "options": {"timestamp": 1.0, "width": 320}}  # fmt: skip
        await ws.send_message(json.dumps(start))
        await ws.send_message(frame("t", "clip.mp4", clip.read_bytes()))
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                (length,) = struct.unpack(">I", message[:4])
                (work / "thumb.jpg").write_bytes(message[4 + length :])
                break
            print("  <-", message[:160])
            if json.loads(message)["type"] == "error":
                raise SystemExit("job failed")
    probe = await trio.run_process(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
         str(work / "thumb.jpg")],
        capture_stdout=True,
    )  # fmt: skip
    stream = json.loads(probe.stdout)["streams"][0]
    print("thumbnail probed:", stream)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 320, 180)

    # A long job: its FFmpeg, inside the container, must be sandboxed.
    silence = work / "silence.flac"
    await trio.run_process(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3600",
         "-c:a", "flac", str(silence)],
    )  # fmt: skip
    async with open_websocket_url(url, max_message_size=64 << 20, extra_headers=headers) as ws:
        start = {"type": "start_job", "job_id": "long", "operation": "speed",
                 "input": {"source": "upload"}, "options": {"speed_factor": 0.25}}  # fmt: skip
        await ws.send_message(json.dumps(start))
        await ws.send_message(frame("long", "silence.flac", silence.read_bytes()))
        while '"processing"' not in (message := await ws.get_message()):
            pass
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


if __name__ == "__main__":
    trio.run(run, sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
