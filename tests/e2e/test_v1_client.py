"""An unmodified protocol v1 client: the `websockets` library on asyncio, in a worker
thread, against the server running in this trio test. Asserts the exact v1 shapes."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import trio
from websockets.asyncio.client import connect as ws_connect

from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import probe, streams

# v1 server messages: required keys and the keys allowed at all.
V1_SHAPES: dict[str, tuple[set[str], set[str]]] = {
    "ack": ({"type", "job_id", "message"}, set()),
    "progress": ({"type", "job_id", "percentage", "stage"}, {"ffmpeg_log"}),
    "completed": ({"type", "job_id", "output_metadata", "delivery_method", "message"}, set()),
    "error": ({"type", "code", "message"}, {"job_id", "details"}),
    "pong": ({"type"}, set()),
}
V1_CODES = {
    "INVALID_JSON",
    "VALIDATION_ERROR",
    "UNKNOWN_MESSAGE_TYPE",
    "JOB_FAILED",
    "JOB_CANCELLED",
    "CANCEL_FAILED",
    "INVALID_BINARY",
    "INTERNAL_ERROR",
}

Frame = dict[str, Any] | bytes


def v1_binary(job_id: str, filename: str, payload: bytes) -> bytes:
    header = json.dumps({"job_id": job_id, "filename": filename}).encode()
    return struct.pack(">I", len(header)) + header + payload


def check_shape(message: dict[str, Any]) -> None:
    assert message.get("type") in V1_SHAPES, f"not a v1 message: {message}"
    required, optional = V1_SHAPES[message["type"]]
    assert required <= message.keys(), message
    assert message.keys() <= required | optional, f"unknown keys: {message}"


async def v1_session(url: str, clip: bytes) -> list[Frame]:
    """What an old client does: ping, one upload job to the end, one cancelled job."""
    frames: list[Frame] = []

    async def receive(ws: Any) -> Frame:
        raw = await asyncio.wait_for(ws.recv(), 30)
        frame: Frame = raw if isinstance(raw, bytes) else json.loads(raw)
        frames.append(frame)
        return frame

    async with ws_connect(url, max_size=64 * 1024 * 1024) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await receive(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "start_job",
                    "job_id": "v1-speed",
                    "operation": "speed",
                    "input": {"source": "upload"},
                    "options": {"speed_factor": 2.0, "maintain_pitch": True},
                }
            )
        )
        await ws.send(v1_binary("v1-speed", "clip.mp4", clip))
        while not isinstance(await receive(ws), bytes):
            pass
        await ws.send(
            json.dumps(
                {
                    "type": "start_job",
                    "job_id": "v1-cancel",
                    "operation": "compress",
                    "input": {"source": "upload"},
                    "options": {"preset": "low"},
                }
            )
        )
        await receive(ws)  # ack
        await ws.send(json.dumps({"type": "cancel_job", "job_id": "v1-cancel"}))
        await receive(ws)  # error JOB_CANCELLED
        await ws.send(json.dumps({"type": "cancel_job", "job_id": "v1-cancel"}))
        await receive(ws)  # error CANCEL_FAILED: it is over
        await ws.send(json.dumps({"type": "ping"}))
        await receive(ws)
    return frames


async def test_v1_client_with_websockets_library(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    clip = media.clip.read_bytes()
    with trio.fail_after(60):
        frames = await trio.to_thread.run_sync(asyncio.run, v1_session(server.url, clip))

    texts = [f for f in frames if not isinstance(f, bytes)]
    for message in texts:
        check_shape(message)
        if message["type"] == "error":
            assert message["code"] in V1_CODES, message
    kinds = [f["type"] if isinstance(f, dict) else "binary" for f in frames]

    # ping -> pong
    assert frames[0] == {"type": "pong"} and frames[-1] == {"type": "pong"}

    # The upload job: ack, progress..., completed, then exactly one binary frame.
    speed = kinds[1 : kinds.index("binary") + 1]
    assert speed[0] == "ack" and speed[-2:] == ["completed", "binary"], kinds
    assert set(speed[1:-2]) == {"progress"} and len(speed) >= 4, kinds
    job = frames[1 : kinds.index("binary") + 1]
    assert all(isinstance(f, bytes) or f["job_id"] == "v1-speed" for f in job)
    progress = [f["percentage"] for f in job if isinstance(f, dict) and f["type"] == "progress"]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    assert progress[-1] == 100
    assert all(isinstance(p, int | float) for p in progress)
    completed = job[-2]
    assert isinstance(completed, dict)
    assert completed["delivery_method"] == "binary"
    meta = completed["output_metadata"]
    for key in ("format", "duration", "size_bytes", "width", "height"):
        assert key in meta, meta

    output = job[-1]
    assert isinstance(output, bytes)
    (length,) = struct.unpack(">I", output[:4])
    header = json.loads(output[4 : 4 + length])
    assert set(header) == {"job_id", "filename"} and header["job_id"] == "v1-speed"
    payload = output[4 + length :]
    assert len(payload) == meta["size_bytes"]
    path = tmp_path / header["filename"]
    path.write_bytes(payload)
    info = probe(path)
    assert abs(float(info["format"]["duration"]) - 1.0) < 0.15  # 2 s at 2x
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == (meta["width"], meta["height"]) == (640, 360)
    assert len(streams(info, "audio")) == 1

    # The cancelled job: ack, JOB_CANCELLED, then CANCEL_FAILED for a second cancel.
    rest = texts[texts.index(completed) + 1 : -1]
    assert [m["type"] for m in rest] == ["ack", "error", "error"], rest
    assert all(m["job_id"] == "v1-cancel" for m in rest)
    assert [m["code"] for m in rest[1:]] == ["JOB_CANCELLED", "CANCEL_FAILED"]


async def v1_errors(url: str) -> list[dict[str, Any]]:
    """A v1 client's mistakes get v1 error codes and the connection carries on."""
    replies = []
    async with ws_connect(url) as ws:
        for text in (
            "not json",
            json.dumps({"type": "explode"}),
            json.dumps({"type": "start_job", "job_id": "x", "operation": "speed"}),
        ):
            await ws.send(text)
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(b"\x00\x01")
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(json.dumps({"type": "ping"}))
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return replies


async def test_v1_client_errors(server: Endpoints) -> None:
    with trio.fail_after(30):
        replies = await trio.to_thread.run_sync(asyncio.run, v1_errors(server.url))
    for reply in replies:
        check_shape(reply)
    assert [r.get("code") for r in replies] == [
        "INVALID_JSON",
        "UNKNOWN_MESSAGE_TYPE",
        "VALIDATION_ERROR",
        "INVALID_BINARY",
        None,
    ]
    assert replies[2]["job_id"] == "x" and replies[-1] == {"type": "pong"}
