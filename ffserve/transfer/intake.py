"""A job's input: a URL download, v1 whole-file uploads, or chunked uploads, to disk.

Each upload piece is written before the next is taken from the job's inbox (a piece or
two deep), which is what paces a fast uploader and bounds memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import trio

from ffserve.config import Config
from ffserve.errors import ErrorCode, JobError, ProtocolError
from ffserve.transfer.chunks import UploadState
from ffserve.transfer.download import FetchPolicy, fetch_to_file
from ffserve.transfer.inbox import UploadInbox
from ffserve.wire.messages import Error, FileSpec, Input, UploadInput, UploadProgress, UrlInput
from ffserve.wire.outbox import Outbox


class DiskBudget(Protocol):
    """The job's share of the temp disk (its admission ticket)."""

    @property
    def max_input_bytes(self) -> int:
        """The largest input the job may send (the server's limit, or its client's quota)."""

    def stored(self, size: int) -> None:
        """`size` announced bytes are on disk now."""

    def check_room(self, size: int) -> None:
        """Errors: JobError(TOO_LARGE) when `size` unannounced bytes do not fit."""


async def receive_input(
    job_id: str,
    source: Input,
    total: int,
    inbox: UploadInbox,
    workdir: Path,
    *,
    outbox: Outbox,
    http: httpx.AsyncClient,
    config: Config,
    disk: DiskBudget,
) -> list[tuple[Path, str]]:
    """Every one of the job's `total` input files on disk, as (path, client's name), in
    order: the URL's first if there is one, then the uploads from `inbox`, each piece
    within the job's temp disk budget.
    """
    paths = []
    if isinstance(source, UrlInput):
        path = workdir / ("input_00" if total > 1 else "input")
        policy = FetchPolicy(
            config.security.allow_private_urls,
            disk.max_input_bytes,
            config.security.url_max_redirects,
            config.security.url_ports,
        )
        await fetch_to_file(http, source.url, path, policy, disk.check_room)
        paths.append((path, httpx.URL(source.url).path.rsplit("/", 1)[-1]))
    files = source.files if isinstance(source, UploadInput) else None
    while len(paths) < total:
        path = workdir / (f"input_{len(paths):02d}" if total > 1 else "input")
        if files is not None:
            spec = files[len(paths)]
            name = await _receive_chunked(
                job_id, inbox, path, len(paths), spec, outbox, config, disk.stored
            )
        else:
            name = await _receive_whole(inbox, path, config, disk)
        paths.append((path, name))
    return paths


async def _receive_whole(inbox: UploadInbox, path: Path, config: Config, disk: DiskBudget) -> str:
    """A v1 upload: one binary message holds the whole file. It is written piece by piece
    as it arrives, so it is never held whole, and refused the moment it passes a limit."""
    part = await inbox.get()
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
            if part.size > disk.max_input_bytes:
                raise JobError(
                    f"upload is over the limit of {disk.max_input_bytes} bytes",
                    code=ErrorCode.TOO_LARGE,
                )
            disk.check_room(len(part.frame.payload))  # its size was not announced: not reserved
            await out.write(part.frame.payload)
            if part.last:
                return part.frame.filename
            part = await inbox.get()


async def _receive_chunked(
    job_id: str,
    inbox: UploadInbox,
    path: Path,
    index: int,
    spec: FileSpec,
    outbox: Outbox,
    config: Config,
    stored: Callable[[int], None],
) -> str:
    """Chunks at increasing offsets, each written to disk before the next is taken."""
    upload = UploadState(spec.size, spec.sha256, config.chunk_bytes)
    name = ""
    async with await trio.open_file(path, "wb") as out:
        while not upload.complete:
            part = await inbox.get()
            frame = part.frame
            offset = frame.extra.get("offset")
            try:
                upload.check(job_id, offset if type(offset) is int else None, part.size)
            except ProtocolError as exc:  # refused chunk; the upload carries on
                await outbox.send(Error(exc.code, exc.message, job_id, exc.details))
                continue
            await trio.to_thread.run_sync(upload.store, out.wrapped, frame.payload)
            stored(len(frame.payload))
            name = name or frame.filename
            await outbox.send(
                UploadProgress(
                    job_id,
                    index,
                    upload.received,
                    upload.size,
                    round(100 * upload.received / upload.size, 1),
                )
            )
    upload.verify()
    return name
