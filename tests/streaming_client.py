"""A client for the chunked-transfer extension that keeps its own memory flat: uploads
stream from disk a chunk at a time, deliveries are written to disk as they arrive.

Used by tests/test_streaming.py in-process, and as a separate process for measurements:

    python -m tests.streaming_client ws://127.0.0.1:8080/ INPUT OUT_DIR [--chunk-kb N]

runs a `convert` (stream copy to MKV) of INPUT with chunked upload and chunked delivery and
prints one JSON line: the final message, upload and delivery MB/s, and each output's size
and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
import wsproto
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from tests.helpers import binary_frame, split_frame

MiB = 1024 * 1024
# Socket read size of the client: trio-websocket's default of 4 KiB makes the *client*
# the bottleneck of a large delivery.
RECEIVE_BUFFER = 256 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def file_spec(path: Path, *, checksum: bool = True) -> dict[str, Any]:
    """The `input.files` entry announcing `path`."""
    spec: dict[str, Any] = {"size": path.stat().st_size}
    if checksum:
        spec["sha256"] = sha256_file(path)
    return spec


def start_message(
    job_id: str,
    operation: str,
    options: dict[str, Any],
    files: list[dict[str, Any]],
    **fields: Any,
) -> dict[str, Any]:
    """A `start_job` announcing `files`; `fields` adds `delivery` / `output`."""
    return {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": {"source": "upload", "files": files},
        "options": options,
        **fields,
    }


def chunk(job_id: str, offset: int, data: bytes, filename: str = "in.bin") -> bytes:
    return binary_frame(job_id, filename, data, offset=offset)


async def send_file(
    ws: WebSocketConnection, job_id: str, path: Path, *, chunk_bytes: int = MiB
) -> int:
    """Stream `path` as chunks at contiguous offsets, reading `chunk_bytes` at a time."""
    offset = 0
    async with await trio.open_file(path, "rb") as f:
        while data := await f.read(chunk_bytes):
            await ws.send_message(chunk(job_id, offset, data, path.name))
            offset += len(data)
    return offset


@attrs.define
class Transfer:
    """What one chunked job produced, as the client saw it."""

    job_id: str
    messages: list[dict[str, Any]] = attrs.Factory(list)
    headers: list[dict[str, Any]] = attrs.Factory(list)  # binary frame headers, in order
    outputs: list[Path] = attrs.Factory(list)
    sha256: list[str] = attrs.Factory(list)
    upload_started: float | None = None
    upload_done: float | None = None
    delivery_started: float | None = None
    delivery_done: float | None = None
    uploaded: int = 0
    delivered: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return next(m for m in reversed(self.messages) if m["type"] in ("completed", "error"))

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def rate(self, what: str) -> float | None:
        """MB/s (10**6 bytes) of the upload or the delivery."""
        start, end, size = (
            (self.upload_started, self.upload_done, self.uploaded)
            if what == "upload"
            else (self.delivery_started, self.delivery_done, self.delivered)
        )
        if start is None or end is None or end <= start:
            return None
        return size / (end - start) / 1e6


async def receive_job(ws: WebSocketConnection, transfer: Transfer, out_dir: Path) -> Transfer:
    """Read `transfer.job_id`'s messages until it ends, writing chunked outputs to
    `out_dir` and checking that their offsets are contiguous."""
    expected: int | None = None  # how many outputs `completed` announced
    files: list[Any] = []
    digests: list[Any] = []
    written: list[int] = []
    try:
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                header, payload = split_frame(message)
                assert header["job_id"] == transfer.job_id, header
                index = header.get("index", 0)
                if index == len(files):  # the first frame of the next output
                    path = out_dir / Path(header["filename"]).name
                    files.append(await trio.open_file(path, "wb"))
                    digests.append(hashlib.sha256())
                    written.append(0)
                    transfer.outputs.append(path)
                assert index == len(files) - 1, header
                assert header["offset"] == written[index], (header, written[index])
                await files[index].write(payload)
                digests[index].update(payload)
                written[index] += len(payload)
                transfer.delivered += len(payload)
                transfer.headers.append(header)
                if header["final"]:
                    transfer.sha256.append(digests[index].hexdigest())
                    if len(transfer.outputs) == expected:
                        transfer.delivery_done = time.perf_counter()
                        break
                continue
            data = json.loads(message)
            if data.get("job_id") != transfer.job_id:
                continue
            transfer.messages.append(data)
            kind = data["type"]
            if kind == "upload_progress" and data["received_bytes"] == data["total_bytes"]:
                transfer.upload_done = time.perf_counter()
            elif kind == "error":
                break
            elif kind == "completed":
                if data["delivery_method"] != "chunked":
                    break
                expected = len(data.get("outputs") or [None])
                transfer.delivery_started = time.perf_counter()
    finally:
        for f in files:
            await f.aclose()
    return transfer


async def run_chunked(
    ws: WebSocketConnection,
    job_id: str,
    operation: str,
    options: dict[str, Any],
    inputs: list[Path],
    out_dir: Path,
    *,
    chunk_bytes: int = MiB,
    checksum: bool = True,
    **fields: Any,
) -> Transfer:
    """Run one job with chunked upload of `inputs`; `fields` adds `delivery` / `output`.

    Sending and receiving run at once: the server acknowledges each chunk, and a client
    that did not read those acknowledgements would stall its own upload.
    """
    specs = [
        await trio.to_thread.run_sync(partial(file_spec, checksum=checksum), p) for p in inputs
    ]
    await ws.send_message(json.dumps(start_message(job_id, operation, options, specs, **fields)))
    transfer = Transfer(job_id)

    async def upload() -> None:
        transfer.upload_started = time.perf_counter()
        for path in inputs:
            transfer.uploaded += await send_file(ws, job_id, path, chunk_bytes=chunk_bytes)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(upload)
        await receive_job(ws, transfer, out_dir)
        nursery.cancel_scope.cancel()  # the job ended early (an error): stop sending
    return transfer


# --- a raw client, for frames trio-websocket cannot send (half a frame) ------------------


@attrs.define
class RawClient:
    """A WebSocket client driven by hand with wsproto, so a test can also write raw bytes
    (e.g. half a frame) to `stream`."""

    stream: trio.SocketStream
    ws: wsproto.WSConnection
    _text: list[str] = attrs.Factory(list)
    _bytes: bytearray = attrs.Factory(bytearray)

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self.stream.send_all(self.ws.send(event))

    async def receive(self) -> str | bytes:
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        text, self._text = "".join(self._text), []
                        return text
                elif isinstance(event, BytesMessage):
                    self._bytes += event.data
                    if event.message_finished:
                        data, self._bytes = bytes(self._bytes), bytearray()
                        return data
            received = await self.stream.receive_some(65536)
            assert received, "the server closed the connection"
            self.ws.receive_data(received)

    async def receive_json(self) -> dict[str, Any]:
        message = await self.receive()
        assert isinstance(message, str), "expected a text frame, got binary"
        data: dict[str, Any] = json.loads(message)
        return data


async def open_raw_websocket(host: str, port: int) -> RawClient:
    """A WebSocket handshake done by hand with wsproto."""
    stream = await trio.open_tcp_stream(host, port)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"{host}:{port}", target="/")))
    while True:
        data = await stream.receive_some(65536)
        assert data, "server closed the connection during the handshake"
        ws.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in ws.events()):
            return RawClient(stream, ws)


def raw_frame_head(length: int) -> bytes:
    """The head of a final, masked binary frame of `length` bytes. The mask key is zero, so
    the payload that follows goes as is."""
    return b"\x82\xff" + length.to_bytes(8, "big") + b"\0\0\0\0"


# --- command line: a separate client process for measurements -------------------------


async def _main(args: argparse.Namespace) -> Transfer:
    delivery = {"mode": "chunked", "chunk_kb": args.chunk_kb}
    async with open_websocket_url(
        args.url, max_message_size=64 * MiB, receive_buffer_size=RECEIVE_BUFFER
    ) as ws:
        return await run_chunked(
            ws,
            "big",
            "convert",
            {"target_format": "mkv", "stream_copy": True},
            [Path(args.input)],
            Path(args.out_dir),
            chunk_bytes=args.chunk_kb * 1024,
            delivery=delivery,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.streaming_client")
    parser.add_argument("url")
    parser.add_argument("input")
    parser.add_argument("out_dir")
    parser.add_argument("--chunk-kb", type=int, default=1024)
    args = parser.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    transfer = trio.run(_main, args)
    report = {
        "final": transfer.final,
        "upload_mb_s": transfer.rate("upload"),
        "delivery_mb_s": transfer.rate("delivery"),
        "uploaded": transfer.uploaded,
        "delivered": transfer.delivered,
        "upload_progress_messages": len(transfer.of("upload_progress")),
        "outputs": [
            {"path": str(p), "size": p.stat().st_size, "sha256": s}
            for p, s in zip(transfer.outputs, transfer.sha256, strict=True)
        ],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
