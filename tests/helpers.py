"""Test helpers: a protocol v1 client over real sockets, media generation, probing, leak checks."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
if "FFSERVE_CORPUS" in os.environ:
    CORPUS = Path(os.environ["FFSERVE_CORPUS"])


def binary_frame(job_id: str, filename: str, payload: bytes, **extra: Any) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": filename, **extra}).encode()
    return struct.pack(">I", len(header)) + header + payload


def upgrade_request(port: int) -> bytes:
    """A WebSocket opening handshake request, as a client sends it."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def split_frame(frame: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack(">I", frame[:4])
    return json.loads(frame[4 : 4 + length]), frame[4 + length :]


@attrs.define
class JobResult:
    """Everything the server sent for one job."""

    messages: list[dict[str, Any]]
    outputs: list[tuple[dict[str, Any], bytes]]

    @property
    def final(self) -> dict[str, Any]:
        return next(m for m in reversed(self.messages) if m["type"] in ("completed", "error"))

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    @property
    def progress(self) -> list[float]:
        return [m["percentage"] for m in self.messages if m["type"] == "progress"]

    def save(self, directory: Path, index: int = 0) -> Path:
        header, data = self.outputs[index]
        path = directory / header["filename"]
        path.write_bytes(data)
        return path


@attrs.define
class Client:
    ws: WebSocketConnection

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def recv(self) -> dict[str, Any] | bytes:
        message = await self.ws.get_message()
        return json.loads(message) if isinstance(message, str) else message

    async def recv_json(self) -> dict[str, Any]:
        message = await self.recv()
        assert isinstance(message, dict), "expected a text frame, got binary"
        return message

    async def start(
        self,
        job_id: str,
        operation: str,
        options: dict[str, Any] | None = None,
        *,
        url: str | None = None,
    ) -> None:
        source = {"source": "url", "url": url} if url else {"source": "upload"}
        await self.send(
            {
                "type": "start_job",
                "job_id": job_id,
                "operation": operation,
                "input": source,
                "options": options or {},
            }
        )

    async def upload(self, job_id: str, path: Path, filename: str | None = None) -> None:
        data = await trio.Path(path).read_bytes()
        await self.ws.send_message(binary_frame(job_id, filename or path.name, data))

    async def collect(self, job_id: str) -> JobResult:
        """Read this job's messages until it ends (error, or completed plus its outputs)."""
        messages: list[dict[str, Any]] = []
        outputs: list[tuple[dict[str, Any], bytes]] = []
        expected = None
        while expected is None or len(outputs) < expected:
            message = await self.recv()
            if isinstance(message, bytes):
                header, data = split_frame(message)
                assert header["job_id"] == job_id
                outputs.append((header, data))
                continue
            if message.get("job_id") != job_id:
                continue
            messages.append(message)
            if message["type"] == "error":
                break
            if message["type"] == "completed":
                no_binary = message["delivery_method"] != "binary"
                expected = 0 if no_binary else len(message.get("outputs") or [None])
        return JobResult(messages, outputs)

    async def run(
        self,
        operation: str,
        path: Path,
        options: dict[str, Any] | None = None,
        job_id: str = "job-1",
    ) -> JobResult:
        await self.start(job_id, operation, options)
        await self.upload(job_id, path)
        return await self.collect(job_id)


@asynccontextmanager
async def connect(url: str, token: str | None = None) -> AsyncIterator[Client]:
    """A v1 client; with `token`, presented as `Authorization: Bearer` on the upgrade."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else None
    async with open_websocket_url(url, max_message_size=1 << 30, extra_headers=headers) as ws:
        yield Client(ws)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def streams(info: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        s
        for s in info["streams"]
        if s["codec_type"] == kind and not s.get("disposition", {}).get("attached_pic")
    ]


def duration(info: dict[str, Any]) -> float:
    return float(info["format"]["duration"])


def children_of(parent: int) -> list[tuple[int, str, str]]:
    """(pid, state, start time) of each process whose parent is `parent`, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.append((int(entry.name), fields[0], fields[19]))
    return children


def descendants(parent: int) -> list[int]:
    """Every process below `parent` (a sandboxed FFmpeg is a grandchild: bwrap's child)."""
    found, todo = [], [parent]
    while todo:
        below = [pid for pid, _, _ in children_of(todo.pop())]
        found += below
        todo += below
    return found


def child_pids() -> list[int]:
    """Child processes of this test process, running or not yet reaped (a zombie left
    behind is a leak too)."""
    return [pid for pid, _, _ in children_of(os.getpid())]


async def wait_no_children(seconds: float = 2.0) -> list[int]:
    """Poll until this process has no children; return those left after `seconds`."""
    with trio.move_on_after(seconds):
        while child_pids():  # noqa: ASYNC110 (no event exists for "a process exited")
            await trio.sleep(0.02)
    return child_pids()


AUDIO_0 = ("-map", "0:a:0", "-af")  # then an audio filter
NULL = ("-f", "null", "-")
MD5 = ("-f", "hash", "-hash", "md5", "-")


def mean_volume(path: Path) -> float:
    """Mean volume in dB of the first audio stream (ffmpeg volumedetect)."""
    out = subprocess.run(
        [*("ffmpeg", "-hide_banner", "-nostats", "-i", str(path)), *AUDIO_0, "volumedetect", *NULL],
        check=True,
        capture_output=True,
        text=True,
    )
    line = next(x for x in out.stderr.splitlines() if "mean_volume:" in x)
    return float(line.split("mean_volume:")[1].split()[0])


def integrated_loudness(path: Path) -> float:
    """Integrated loudness in LUFS of the first audio stream (ffmpeg ebur128)."""
    out = subprocess.run(
        [*("ffmpeg", "-hide_banner", "-nostats", "-i", str(path)), *AUDIO_0, "ebur128", *NULL],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = out.stderr.rsplit("Summary:", 1)[1]
    line = next(x for x in summary.splitlines() if x.strip().startswith("I:"))
    return float(line.split()[1])


# --- lifecycle / bad-input helpers --------------------------------------------------


def job_dirs(workdir: Path) -> list[Path]:
    """Job temp dirs left under a test server's temp root (`workdir/ffserve-*/job-*`)."""
    return sorted(workdir.glob("ffserve-*/job-*"))


async def next_error(client: Client, code: str, job_id: str | None = None) -> dict[str, Any]:
    """The very next frame must be an `error` with `code` (and `job_id`, when given)."""
    message = await client.recv_json()
    assert message["type"] == "error", message
    assert message["code"] == code, message
    if job_id is not None:
        assert message.get("job_id") == job_id, message
    return message


async def wait_for(client: Client, job_id: str, kind: str, stage: str | None = None) -> None:
    """Read (and drop) frames until `job_id` gets a `kind` message (at `stage`, if given).

    Errors: AssertionError if the job ends (error) first.
    """
    while True:
        message = await client.recv()
        if isinstance(message, bytes) or message.get("job_id") != job_id:
            continue
        if message["type"] == kind and (stage is None or message.get("stage") == stage):
            return
        assert message["type"] != "error", message


def packet_hash(path: Path, stream: str = "v:0") -> str:
    """MD5 of one stream's packets: equal after a stream copy, different after re-encoding."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", *MD5],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


async def run_uploads(
    client: Client, operation: str, options: dict[str, Any], paths: list[Path], job_id: str = "m1"
) -> JobResult:
    """A job with several uploads (concat, burn_subtitles with a subtitle file)."""
    await client.start(job_id, operation, options)
    for path in paths:
        await client.upload(job_id, path)
    return await client.collect(job_id)


def gray_frame(path: Path, *, at: float | None = None, vf: str | None = None) -> bytes:
    """One frame of `path` (at `at` seconds, through filter `vf`) as 8-bit gray pixels."""
    seek = ["-ss", str(at)] if at is not None else []
    scale = ["-vf", vf] if vf else []
    args = ["ffmpeg", "-v", "error", *seek, "-i", str(path), "-frames:v", "1", *scale,
            "-f", "rawvideo", "-pix_fmt", "gray", "-"]  # fmt: skip
    return subprocess.run(args, check=True, capture_output=True).stdout


def pixel_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two same-sized gray frames (0-255)."""
    return sum(abs(p - q) for p, q in zip(a, b, strict=True)) / len(a)


def caption_area_difference(a: Path, b: Path, at: float) -> float:
    """Mean pixel difference in the bottom fifth of two videos' frames at time `at`."""
    vf = "crop=iw:ih/5:0:ih*4/5,scale=160:24"
    return pixel_difference(gray_frame(a, at=at, vf=vf), gray_frame(b, at=at, vf=vf))
