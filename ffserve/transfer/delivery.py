"""Sending a job's results: v1 single frames, chunked frames, or a PUT to an output URL.

Delivery sends only what the lifecycle has verified (`ffserve.ffmpeg.verify`). It
returns the job's last message unsent: the job sends it once its files are removed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import trio

from ffserve.config import Config
from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.verify import VerifiedOutput
from ffserve.transfer.publish import put_file
from ffserve.wire.binary import encode_header
from ffserve.wire.messages import Completed, Delivery, OutputTarget
from ffserve.wire.outbox import FileFrame, HeldFrame, Outbox

FRAME_HEADER_ROOM = 4096
# A job's last message: a binary frame held with its outbox place (a chunk, or a v1
# output read from its file as it is sent), or `completed` when nothing binary follows.
LastMessage = HeldFrame | Completed

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "gif": "image/gif",
    "png": "image/png",
    "jpg": "image/jpeg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}


def completion(
    job_id: str, operation: str, metadata: list[dict[str, Any]], method: str
) -> Completed:
    """The one way a `completed` message is made: the first output's metadata (v1), all
    of them under `outputs` when there are several, and a message naming the files."""
    names = ", ".join(m["filename"] for m in metadata if "filename" in m)
    return Completed(
        job_id,
        metadata[0],
        method,
        f"{operation} completed" + (f": {names}" if names else ""),
        outputs=metadata if len(metadata) > 1 else None,
    )


async def deliver(
    job_id: str,
    operation: str,
    outputs: list[VerifiedOutput],
    *,
    delivery: Delivery | None,
    target: OutputTarget | None,
    outbox: Outbox,
    http: httpx.AsyncClient,
    config: Config,
) -> LastMessage:
    """Send verified `outputs` the way the client asked (v1: one frame each).

    Returns the job's last message, unsent: the caller sends it once the job's files
    are gone (it is in memory, or holds its file open, by then).

    Errors: JobError(TOO_LARGE) for an output over a v1 message, URL_* for an output URL.
    """
    mode = "url" if target else (delivery.mode if delivery else "binary")
    metadata = []
    for output in outputs:
        meta = dict(output.metadata)
        # The frame is the file plus a small header, all in one WebSocket message.
        if mode == "binary" and output.size + FRAME_HEADER_ROOM > config.max_message_bytes:
            raise JobError(
                f"output is {output.size} bytes, over the {config.max_message_bytes}-byte "
                'limit of a single message; ask for chunked delivery ("delivery": '
                '{"mode": "chunked"}) or an output URL ("output": {"url": ...})',
                code=ErrorCode.TOO_LARGE,
            )
        if mode != "binary":
            meta["sha256"] = await trio.to_thread.run_sync(sha256_file, output.path)
        metadata.append(meta)
    if target is not None:
        metadata[0]["url"] = await _publish(http, target, outputs, config)
        return completion(job_id, operation, metadata, "url")
    await outbox.send(completion(job_id, operation, metadata, mode))
    # A client may ask for smaller chunks, never for more than the server's limit.
    chunk = config.chunk_bytes
    if delivery and delivery.chunk_kb:
        chunk = min(chunk, delivery.chunk_kb * 1024)
    several = len(outputs) > 1
    for index, output in enumerate(outputs):
        # Several outputs: each frame says which it is, so a client knows the last one.
        extra = {"index": index, "count": len(outputs)} if several else {}
        if mode == "chunked":
            final = await _send_chunks(outbox, job_id, output, chunk, extra)
        else:
            header = encode_header(job_id, output.filename, **extra)
            final = await _file_frame(outbox, header, output)
        if index < len(outputs) - 1:
            await final.send()
    return final


async def _publish(
    http: httpx.AsyncClient, target: OutputTarget, outputs: list[VerifiedOutput], config: Config
) -> str:
    """PUT the one output to the output URL; returns where it went (no query)."""
    if len(outputs) > 1:
        raise JobError(
            f"an output URL takes one file; this job made {len(outputs)}",
            code=ErrorCode.VALIDATION_ERROR,
            details={"field": "$.output"},
        )
    output = outputs[0]
    # The client's timeouts bound each read and write; this bounds a target that takes
    # the body at a trickle.
    with trio.move_on_after(config.jobs.timeout_s):
        return await put_file(
            http,
            target.url,
            output.path,
            CONTENT_TYPES.get(output.container, "application/octet-stream"),
            allow_private=config.security.allow_private_urls,
            ports=config.security.url_ports,
        )
    raise JobError(
        f"uploading to the output URL took longer than {config.jobs.timeout_s:g} s",
        code=ErrorCode.URL_UPLOAD_FAILED,
    )


async def _file_frame(outbox: Outbox, header: bytes, output: VerifiedOutput) -> HeldFrame:
    """v1: one message, read from disk as the writer sends it (the file stays readable
    once the job's dir is removed: the frame holds it open). The place comes first: jobs
    of a client that has stopped reading wait before opening."""
    async with outbox.binary_slot() as slot:
        file = await trio.to_thread.run_sync(open, output.path, "rb")
        return slot.hold(FileFrame(header, file, os.fstat(file.fileno()).st_size))


async def _send_chunks(
    outbox: Outbox, job_id: str, output: VerifiedOutput, chunk: int, extra: dict[str, Any]
) -> HeldFrame:
    """Chunked delivery: frames with offsets, the last one (returned, held, not sent)
    marked final. The bounded outbox makes a slow reader slow down only this loop."""
    size = (await trio.Path(output.path).stat()).st_size
    offset = 0
    async with await trio.open_file(output.path, "rb") as f:
        while True:
            async with outbox.binary_slot() as slot:
                data = await f.read(chunk)
                final = offset + len(data) >= size
                header = encode_header(job_id, output.filename, offset=offset, final=final, **extra)
                if final:
                    return slot.hold(header + data)
                await slot.send(header + data)
            offset += len(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
