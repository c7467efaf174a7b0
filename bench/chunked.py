"""The big-file client: one job with a chunked upload and a chunked delivery (docs/protocol.md,
section 8.4), run in its own process (`python -m bench.chunked`) that prints one JSON line.

Its memory stays flat: the upload is read from disk 1 MiB at a time and paced by the
server's `upload_progress` acknowledgements (at most `window` chunks unacknowledged), and the
delivery is written to disk and hashed chunk by chunk as it arrives.

It uses the `websockets` library's threaded client, not trio-websocket: a client masks
every byte it sends, and wsproto masks in Python at about 190 MB/s on this kind of machine,
below the 250 MB/s the server is asked to take; `websockets` masks in C, as browsers and
most clients do. A separate process keeps the bench's own event loop (and its GIL) out of
the figures, as for the side pinger.

Every step is stamped with `time.monotonic()`, the system-wide clock the pinger stamps its
pings with, so the bench can sort pings into upload, processing and delivery.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import trio

from bench.procstat import parse_status

MIB = 1024 * 1024
# Large enough for a chunk of up to 16 MiB plus its header; far below anything that
# would let a misbehaving server make the client hold a whole file.
MAX_FRAME = 17 * MIB
OPERATION = "convert"
OPTIONS: dict[str, Any] = {"target_format": "mkv", "stream_copy": True}


def sha256_file(path: Path, block: int = MIB) -> str:
    """The file's sha256, read `block` bytes at a time (blocking)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


def chunk_header(job_id: str, filename: str, offset: int) -> bytes:
    header = json.dumps(
        {"job_id": job_id, "filename": filename, "offset": offset}, separators=(",", ":")
    ).encode()
    return struct.pack(">I", len(header)) + header


def split_frame(frame: bytes) -> tuple[dict[str, Any], memoryview]:
    """A binary frame's JSON header and payload (a view: no copy).

    Errors: ValueError if the frame is not a header-length, JSON object, payload frame.
    """
    if len(frame) < 4:
        raise ValueError("binary frame shorter than its header length")
    (length,) = struct.unpack_from(">I", frame)
    if not 1 <= length <= len(frame) - 4:
        raise ValueError(f"binary frame header length {length} does not fit the frame")
    header = json.loads(frame[4 : 4 + length])
    if not isinstance(header, dict):
        raise ValueError("binary frame header is not a JSON object")
    return header, memoryview(frame)[4 + length :]


def start_message(job_id: str, size: int, sha256: str | None, chunk_bytes: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"size": size}
    if sha256 is not None:
        spec["sha256"] = sha256
    return {
        "type": "start_job",
        "job_id": job_id,
        "operation": OPERATION,
        "input": {"source": "upload", "files": [spec]},
        "options": OPTIONS,
        "delivery": {"mode": "chunked", "chunk_kb": chunk_bytes // 1024},
    }


@attrs.define
class Outcome:
    """What one chunked job did, as the client saw it: the JSON line the process prints.
    Times are `time.monotonic()` seconds; None = not seen."""

    submitted: float | None = None  # start_job sent
    upload_started: float | None = None  # first chunk handed to the socket
    upload_sent: float | None = None  # last chunk handed to the socket
    upload_done: float | None = None  # upload_progress for the last byte
    queued: float | None = None
    running: float | None = None
    processed: float | None = None  # FFmpeg done (progress 100)
    completed: float | None = None
    delivered: float | None = None  # final chunk written to disk
    sent_bytes: int = 0
    acked_bytes: int = 0
    progress_messages: int = 0
    max_unacked_chunks: int = 0
    window_waits: int = 0  # times the sender waited for an acknowledgement
    delivered_bytes: int = 0
    delivery_chunks: int = 0
    output_sha256: str | None = None  # computed by the client over what it received
    output_metadata: dict[str, Any] = attrs.Factory(dict)
    delivery_method: str | None = None
    stage: str | None = None
    error: str | None = None
    client_peak_rss_mib: float | None = None
    client_cpu_s: float | None = None  # the client process's user + system CPU

    @property
    def ok(self) -> bool:
        return self.error is None and self.delivered is not None

    @property
    def latency(self) -> float | None:
        """start_job sent to the last delivered byte on disk."""
        if self.submitted is None or self.delivered is None:
            return None
        return self.delivered - self.submitted

    @property
    def checksum_ok(self) -> bool | None:
        """The delivery's sha256 equals completed.output_metadata.sha256 (None: unknown)."""
        announced = self.output_metadata.get("sha256")
        if self.output_sha256 is None or not isinstance(announced, str):
            return None
        return self.output_sha256 == announced

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@attrs.define(eq=False)
class ChunkedJob:
    """The client side of one job: `upload` runs in a thread, `feed` takes every message."""

    job_id: str
    source: Path
    out_path: Path
    chunk_bytes: int = MIB
    window: int = 4  # chunks sent and not yet acknowledged, at most
    outcome: Outcome = attrs.Factory(Outcome)
    size: int = 0
    finished: bool = False
    _room: threading.Condition = attrs.Factory(threading.Condition)
    _out: BinaryIO | None = None
    _digest: Any = None

    def __attrs_post_init__(self) -> None:
        self.size = self.source.stat().st_size

    def fail(self, error: str) -> None:
        with self._room:
            if not self.finished:
                self.outcome.error = error
                self.finished = True
            self._room.notify_all()  # release a sender waiting for room in the window

    def upload(self, send: Any) -> None:
        """Send the file as chunks read from disk, at most `window` unacknowledged."""
        out = self.outcome
        name = self.source.name
        with self.source.open("rb") as f:
            while data := f.read(self.chunk_bytes):
                with self._room:
                    while (
                        out.sent_bytes - out.acked_bytes >= self.window * self.chunk_bytes
                        and not self.finished
                    ):
                        out.window_waits += 1
                        self._room.wait()
                    if self.finished:
                        return
                    offset = out.sent_bytes
                    # Chunks in flight once this one is sent.
                    unacked = -(-(offset + len(data) - out.acked_bytes) // self.chunk_bytes)
                    out.max_unacked_chunks = max(out.max_unacked_chunks, unacked)
                if out.upload_started is None:
                    out.upload_started = time.monotonic()
                frame = chunk_header(self.job_id, name, offset) + data
                with self._room:
                    out.sent_bytes += len(data)  # before send: its ack may come first
                send(frame)
        out.upload_sent = time.monotonic()

    def feed(self, message: str | bytes) -> bool:
        """Take one message from the server; True once the job has ended."""
        if isinstance(message, bytes):
            try:
                header, payload = split_frame(message)
            except ValueError as exc:
                self.fail(f"bad delivery frame: {exc}")
            else:
                if header.get("job_id") == self.job_id:
                    self._chunk(header, payload)
        else:
            data = json.loads(message)
            if isinstance(data, dict) and data.get("job_id") == self.job_id:
                self._text(data, time.monotonic())
        return self.finished

    def _text(self, data: dict[str, Any], now: float) -> None:
        out = self.outcome
        kind = data.get("type")
        if kind == "upload_progress":
            received = data.get("received_bytes")
            with self._room:
                out.progress_messages += 1
                if isinstance(received, int) and received > out.acked_bytes:
                    out.acked_bytes = received
                    self._room.notify_all()
            if received == self.size:
                out.upload_done = now
        elif kind == "progress":
            stage = data.get("stage")
            out.stage = stage if isinstance(stage, str) else out.stage
            if stage == "queued":
                out.queued = out.queued or now
            elif out.running is None:
                out.running = now
            percentage = data.get("percentage")
            if isinstance(percentage, int | float) and percentage >= 100:
                out.processed = out.processed or now
        elif kind == "completed":
            out.completed = now
            metadata = data.get("output_metadata")
            out.output_metadata = metadata if isinstance(metadata, dict) else {}
            method = data.get("delivery_method")
            out.delivery_method = method if isinstance(method, str) else None
            if method != "chunked":
                self.fail(f"completed with delivery_method {method!r}, not 'chunked'")
                return
            self._out = self.out_path.open("wb")
            self._digest = hashlib.sha256()
        elif kind == "error":
            self.fail(f"{data.get('code')}: {data.get('message')}")

    def _chunk(self, header: dict[str, Any], payload: memoryview) -> None:
        out = self.outcome
        if self._out is None:
            self.fail("a delivery chunk before `completed`")
            return
        if header.get("offset") != out.delivered_bytes:
            self.fail(
                f"delivery chunk at offset {header.get('offset')}, expected {out.delivered_bytes}"
            )
            return
        self._out.write(payload)
        self._digest.update(payload)
        out.delivered_bytes += len(payload)
        out.delivery_chunks += 1
        if header.get("final") is True:
            self.close()
            out.output_sha256 = self._digest.hexdigest()
            out.delivered = time.monotonic()
            with self._room:
                self.finished = True
                self._room.notify_all()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def run(
    url: str,
    job: ChunkedJob,
    sha256: str | None,
    *,
    timeout: float,
) -> Outcome:
    """Run the job over one connection: upload in a thread, read in this one (blocking)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    out = job.outcome
    with connect(
        url,
        max_size=MAX_FRAME,
        compression=None,
        proxy=None,
        open_timeout=30,
        close_timeout=5,
    ) as ws:

        def upload() -> None:
            try:
                job.upload(ws.send)
            except ConnectionClosed:
                job.fail("connection closed while uploading")

        out.submitted = time.monotonic()
        ws.send(json.dumps(start_message(job.job_id, job.size, sha256, job.chunk_bytes)))
        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout
        try:
            while not job.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    job.fail(f"no result within {timeout:g} s")
                    break
                try:
                    job.feed(ws.recv(timeout=left))
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    job.fail("connection closed")
        finally:
            job.close()
        sender.join(timeout=5)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a
    # big bench process would report the bench's size. VmHWM belongs to this exec's memory.
    peak = parse_status(Path("/proc/self/status").read_text()).get("VmHWM")
    out.client_peak_rss_mib = round(peak / 1024, 1) if peak is not None else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.client_cpu_s = round(usage.ru_utime + usage.ru_stime, 3)
    return out


async def run_in_process(
    url: str,
    source: Path,
    out_path: Path,
    sha256: str | None,
    *,
    chunk_bytes: int = MIB,
    window: int = 4,
    job_limit_s: float,
) -> Outcome:
    """Run the job in a `python -m bench.chunked` process, which gives up after
    `job_limit_s`; its outcome (errors included). Cancelling kills the process."""
    args = [sys.executable, "-m", "bench.chunked", url, str(source), str(out_path)]
    args += ["--chunk-kb", str(chunk_bytes // 1024), "--window", str(window)]
    args += ["--timeout", str(job_limit_s)]
    if sha256 is not None:
        args += ["--sha256", sha256]
    done = await trio.run_process(
        args, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        return Outcome(error=f"the client process exited {done.returncode}: {tail}")
    return Outcome.from_json(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chunked")
    parser.add_argument("url")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path, help="where the delivery is written")
    parser.add_argument("--sha256", help="announce this checksum of the input")
    parser.add_argument("--chunk-kb", type=int, default=1024)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--job-id", default="big-1")
    args = parser.parse_args(argv)
    job = ChunkedJob(
        args.job_id, args.input, args.output, chunk_bytes=args.chunk_kb * 1024, window=args.window
    )
    try:
        outcome = run(args.url, job, args.sha256, timeout=args.timeout)
    except Exception as exc:  # could not connect, the connection broke: still report
        outcome = job.outcome
        outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
    print(json.dumps(attrs.asdict(outcome)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
