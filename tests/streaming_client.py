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
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import trio
import wsproto
from trio_websocket import WebSocketConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from tests.helpers import binary_frame, split_frame

MiB = 1024 * 1024


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
    files: list[dict[str, Any]] | None,
    **fields: Any,
) -> dict[str, Any]:
    """A `start_job` announcing `files` (None: a v1 upload); `fields` adds `delivery` /
    `output`."""
    source = {"source": "upload"} if files is None else {"source": "upload", "files": files}
    return {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": source,
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
    """What one chunked job produced, as the client saw it. `feed` it every message; it
    writes chunked outputs to `out_dir`, checking that their offsets are contiguous."""

    job_id: str
    out_dir: Path
    messages: list[dict[str, Any]] = attrs.Factory(list)
    headers: list[dict[str, Any]] = attrs.Factory(list)  # binary frame headers, in order
    payloads: list[int] = attrs.Factory(list)  # and their payload sizes
    outputs: list[Path] = attrs.Factory(list)
    sha256: list[str] = attrs.Factory(list)
    upload_started: float | None = None
    upload_done: float | None = None
    delivery_started: float | None = None
    delivery_done: float | None = None
    uploaded: int = 0
    delivered: int = 0
    _expected: int | None = None  # how many outputs `completed` announced
    _file: BinaryIO | None = None
    _digest: Any = None
    _written: int = 0

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

    def feed(self, message: str | bytes) -> bool:
        """Take one message from the server; True once the job has ended (an error, or
        `completed` and every output)."""
        if isinstance(message, bytes):
            return self._chunk(message)
        data = json.loads(message)
        if data.get("job_id") != self.job_id:
            return False
        self.messages.append(data)
        kind = data["type"]
        if kind == "upload_progress" and data["received_bytes"] == data["total_bytes"]:
            self.upload_done = time.perf_counter()
        elif kind == "completed" and data["delivery_method"] == "chunked":
            self._expected = len(data.get("outputs") or [None])
            self.delivery_started = time.perf_counter()
            return False
        return kind in ("error", "completed")

    def _chunk(self, frame: bytes) -> bool:
        header, payload = split_frame(frame)
        assert header["job_id"] == self.job_id, header
        assert self._expected is not None, "a chunk before `completed`"
        index = header.get("index", 0)
        if self._file is None:  # the first frame of the next output
            assert index == len(self.outputs), header
            path = self.out_dir / Path(header["filename"]).name
            self._file, self._digest, self._written = path.open("wb"), hashlib.sha256(), 0
            self.outputs.append(path)
        assert index == len(self.outputs) - 1, header
        assert header["offset"] == self._written, (header, self._written)
        self._file.write(payload)
        self._digest.update(payload)
        self._written += len(payload)
        self.delivered += len(payload)
        self.headers.append(header)
        self.payloads.append(len(payload))
        if not header["final"]:
            return False
        self.close()
        self.sha256.append(self._digest.hexdigest())
        if len(self.outputs) < self._expected:
            return False
        self.delivery_done = time.perf_counter()
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_job(ws: WebSocketConnection, transfer: Transfer) -> Transfer:
    """Read `transfer.job_id`'s messages until it ends."""
    try:
        while not transfer.feed(await ws.get_message()):
            pass
    finally:
        transfer.close()
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
    transfer = Transfer(job_id, out_dir)

    async def upload() -> None:
        transfer.upload_started = time.perf_counter()
        for path in inputs:
            transfer.uploaded += await send_file(ws, job_id, path, chunk_bytes=chunk_bytes)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(upload)
        await receive_job(ws, transfer)
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


def run_process_client(url: str, path: Path, out_dir: Path, chunk_bytes: int) -> Transfer:
    """The same job as `run_chunked`, with the `websockets` library's threaded client: it
    masks frames in C, as browsers and most clients do, where trio-websocket's client
    (wsproto) masks in Python and would measure itself rather than the server."""
    from websockets.sync.client import connect as ws_connect

    spec = file_spec(path)
    message = start_message(
        "big",
        "convert",
        {"target_format": "mkv", "stream_copy": True},
        [spec],
        delivery={"mode": "chunked", "chunk_kb": chunk_bytes // 1024},
    )
    transfer = Transfer("big", out_dir)
    with ws_connect(url, max_size=64 * MiB, compression=None) as ws:
        ws.send(json.dumps(message))

        def upload() -> None:
            transfer.upload_started = time.perf_counter()
            with path.open("rb") as f:
                while data := f.read(chunk_bytes):
                    ws.send(chunk("big", transfer.uploaded, data, path.name))
                    transfer.uploaded += len(data)

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        try:
            while not transfer.feed(ws.recv()):
                pass
        finally:
            transfer.close()
        sender.join()
    return transfer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.streaming_client")
    parser.add_argument("url")
    parser.add_argument("input", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--chunk-kb", type=int, default=1024)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    transfer = run_process_client(args.url, args.input, args.out_dir, args.chunk_kb * 1024)
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
