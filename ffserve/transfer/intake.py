"""A job's input: a URL download, v1 whole-file uploads, or chunked uploads, to disk.

Each upload is written before the next frame is taken from the job (whose channel is a
frame or two deep), which is what paces a fast uploader and bounds memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import trio

from ffserve.errors import ErrorCode, JobError, ProtocolError
from ffserve.jobs.services import Services
from ffserve.transfer.chunks import UploadState
from ffserve.transfer.download import FetchPolicy, fetch_to_file
from ffserve.wire.messages import Error, FileSpec, UploadInput, UploadProgress, UrlInput
from ffserve.wire.outbox import Outbox

if TYPE_CHECKING:
    from ffserve.jobs.job import Job


async def receive_input(
    job: Job, services: Services, outbox: Outbox, workdir: Path
) -> list[tuple[Path, str]]:
    """Every input file on disk, as (path, client's name), in order."""
    config = services.config
    total = job.inputs_total
    paths = []
    if isinstance(job.input, UrlInput):
        path = workdir / ("input_00" if total > 1 else "input")
        policy = FetchPolicy(
            config.security.allow_private_urls,
            config.max_upload_bytes,
            config.security.url_max_redirects,
        )
        await fetch_to_file(services.http, job.input.url, path, policy)
        paths.append((path, httpx.URL(job.input.url).path.rsplit("/", 1)[-1]))
    files = job.input.files if isinstance(job.input, UploadInput) else None
    while len(paths) < total:
        path = workdir / (f"input_{len(paths):02d}" if total > 1 else "input")
        if files is not None:
            name = await _receive_chunked(job, services, outbox, path, len(paths), files)
        else:
            name = await _receive_whole(job, services, path)
        paths.append((path, name))
    overrun = files is not None and job.frame_waiting()
    job.close_uploads()
    if overrun:
        raise JobError("upload runs past its announced size", code=ErrorCode.TOO_LARGE)
    return paths


async def _receive_whole(job: Job, services: Services, path: Path) -> str:
    """A v1 upload: one binary message holds the whole file. It is written piece by piece
    as it arrives, so it is never held whole, and refused the moment it passes a limit."""
    config = services.config
    part = await job.next_upload()
    async with await trio.open_file(path, "wb") as out:
        while True:
            if part.size > config.max_message_bytes:
                raise JobError(
                    f"a v1 upload is one WebSocket message of at most {config.max_message_bytes}"
                    " bytes; send larger files in chunks (input.files with their sizes, "
                    "docs/protocol.md 8.4)",
                    code=ErrorCode.TOO_LARGE,
                    details={"max_message_bytes": config.max_message_bytes},
                )
            if part.size > config.max_upload_bytes:
                raise JobError(
                    f"upload is over the limit of {config.max_upload_bytes} bytes",
                    code=ErrorCode.TOO_LARGE,
                )
            await out.write(part.frame.payload)
            if part.last:
                return part.frame.filename
            part = await job.next_upload()


async def _receive_chunked(
    job: Job, services: Services, outbox: Outbox, path: Path, index: int, files: list[FileSpec]
) -> str:
    """Chunks at increasing offsets, each written to disk before the next is taken."""
    spec = files[index]
    upload = UploadState(spec.size, spec.sha256, services.config.chunk_bytes)
    name = ""
    async with await trio.open_file(path, "wb") as out:
        while not upload.complete:
            part = await job.next_upload()
            frame = part.frame
            offset = frame.extra.get("offset")
            try:
                upload.check(job.job_id, offset if type(offset) is int else None, part.size)
            except ProtocolError as exc:  # refused chunk; the upload carries on
                await outbox.send(Error(exc.code, exc.message, job.job_id, exc.details))
                continue
            await trio.to_thread.run_sync(upload.store, out.wrapped, frame.payload)
            # Written bytes now show in the disk's free space: stop reserving them too.
            job.reserved_bytes -= len(frame.payload)
            services.reserved_bytes -= len(frame.payload)
            name = name or frame.filename
            await outbox.send(
                UploadProgress(
                    job.job_id,
                    index,
                    upload.received,
                    upload.size,
                    round(100 * upload.received / upload.size, 1),
                )
            )
    upload.verify()
    return name
