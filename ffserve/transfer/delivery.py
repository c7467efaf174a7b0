"""Sending a job's results: v1 single frames, chunked frames, or a PUT to an output URL.

Every output is verified (probed) first: FFmpeg exiting 0 does not prove it wrote
something playable. The job is marked finished just before its last frame is queued.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops import Plan
from ffserve.ffmpeg.probe import verify_output
from ffserve.jobs.services import Services
from ffserve.media.metadata import output_metadata
from ffserve.transfer.publish import put_file
from ffserve.wire.binary import encode_header
from ffserve.wire.messages import Completed
from ffserve.wire.outbox import FileFrame, Outbox

if TYPE_CHECKING:
    from ffserve.jobs.job import Job

FRAME_HEADER_ROOM = 4096
# A job's last message: a binary frame (a chunk, or a v1 output read from its file as it
# is sent), or `completed` when nothing binary follows.
LastMessage = bytes | FileFrame | Completed

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


async def deliver(job: Job, services: Services, outbox: Outbox, plan: Plan) -> LastMessage:
    """Verify every output, then send it the way the client asked (v1: one frame each).

    Returns the job's last message, unsent: the caller sends it once the job's files
    are gone (it is in memory, or holds its file open, by then). A binary one has its
    outbox slot taken already: send it with `send_reserved`, which frees the slot (and
    closes the file) if it cannot be queued.
    """
    config = services.config
    mode = "url" if job.output else (job.delivery.mode if job.delivery else "binary")
    metadata: list[dict[str, Any]] = []
    for output in plan.outputs:
        info = await verify_output(services, output.path, output.container)
        meta = {"filename": output.filename, **output_metadata(info, output.container)}
        size = meta["size_bytes"]
        if size > config.max_output_bytes:
            raise JobError(
                f"output is {size} bytes, over the {config.max_output_bytes}-byte output limit",
                code=ErrorCode.TOO_LARGE,
            )
        # The frame is the file plus a small header, all in one WebSocket message.
        if mode == "binary" and size + FRAME_HEADER_ROOM > config.max_message_bytes:
            raise JobError(
                f"output is {size} bytes, over the {config.max_message_bytes}-byte limit of a "
                'single message; ask for chunked delivery ("delivery": {"mode": "chunked"}) '
                'or an output URL ("output": {"url": ...})',
                code=ErrorCode.TOO_LARGE,
            )
        if mode != "binary":
            meta["sha256"] = await trio.to_thread.run_sync(sha256_file, output.path)
        metadata.append(meta)
    several = len(metadata) > 1
    names = ", ".join(m["filename"] for m in metadata)
    message = f"{job.operation} completed: {names}"
    if job.output is not None:
        if several:
            raise JobError(
                f"an output URL takes one file; this job made {len(metadata)}",
                code=ErrorCode.VALIDATION_ERROR,
                details={"field": "$.output"},
            )
        # The client's timeouts bound each read and write; this bounds a target that
        # takes the body at a trickle.
        with trio.move_on_after(config.jobs.timeout_s) as uploading:
            metadata[0]["url"] = await put_file(
                services.http,
                job.output.url,
                plan.outputs[0].path,
                CONTENT_TYPES.get(plan.outputs[0].container, "application/octet-stream"),
                allow_private=config.security.allow_private_urls,
            )
        if uploading.cancelled_caught:
            raise JobError(
                f"uploading to the output URL took longer than {config.jobs.timeout_s:g} s",
                code=ErrorCode.URL_UPLOAD_FAILED,
            )
        return Completed(job.job_id, metadata[0], "url", message)
    await outbox.send(
        Completed(job.job_id, metadata[0], mode, message, outputs=metadata if several else None)
    )
    # A client may ask for smaller chunks, never for more than the server's limit.
    chunk = config.chunk_bytes
    if job.delivery and job.delivery.chunk_kb:
        chunk = min(chunk, job.delivery.chunk_kb * 1024)
    final: bytes | FileFrame = b""
    for index, output in enumerate(plan.outputs):
        # Several outputs: each frame says which it is, so a client knows the last one.
        extra = {"index": index, "count": len(plan.outputs)} if several else {}
        if mode == "chunked":
            final = await _send_chunks(
                outbox, job.job_id, output.path, output.filename, chunk, extra
            )
        else:
            # v1: one message, read from disk as the writer sends it (the file stays
            # readable once the job's dir is removed: the frame holds it open). The slot
            # comes first: jobs of a client that has stopped reading wait before opening.
            await outbox.reserve_binary()
            try:
                file = await trio.to_thread.run_sync(open, output.path, "rb")
            except BaseException:
                outbox.release_binary()
                raise
            header = encode_header(job.job_id, output.filename, **extra)
            final = FileFrame(header, file, os.fstat(file.fileno()).st_size)
        if index < len(plan.outputs) - 1:
            await outbox.send_reserved(final)
    return final


async def _send_chunks(
    outbox: Outbox, job_id: str, path: Path, filename: str, chunk: int, extra: dict[str, Any]
) -> bytes:
    """Chunked delivery: frames with offsets, the last one (returned, not sent, its slot
    taken) marked final. The bounded outbox makes a slow reader slow down only this loop."""
    size = (await trio.Path(path).stat()).st_size
    offset = 0
    async with await trio.open_file(path, "rb") as f:
        while True:
            await outbox.reserve_binary()
            try:
                data = await f.read(chunk)
            except BaseException:
                outbox.release_binary()
                raise
            final = offset + len(data) >= size
            header = encode_header(job_id, filename, offset=offset, final=final, **extra)
            if final:
                return header + data
            await outbox.send_reserved(header + data)
            offset += len(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
