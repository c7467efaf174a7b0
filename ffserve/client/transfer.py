"""Files in and out in chunks (docs/protocol.md 8.4), with bounded memory on this side.

Upload: each file is hashed first (its sha256 goes in `start_job`), then sent as chunks
while at most `WINDOW` chunks wait for their `upload_progress`. The first chunk goes
alone: a server with a smaller `chunk_kb` refuses it with INVALID_CHUNK naming its
`max_chunk_bytes`, and the upload starts again at that size. Delivery: each output is
written to `<name>.part` as its chunks arrive, hashed as it streams, and renamed into
place once its size and sha256 match what `completed` announced.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ffserve.client.errors import ServerError, TransferError
from ffserve.wire.binary import encode_header

WINDOW = 4  # chunks in flight: the server holds at most four of a job in memory
MIN_CHUNK = 16 * 1024  # the smallest `[limits] chunk_kb` a server can have


def file_spec(path: Path) -> dict[str, Any]:
    """`{"size", "sha256"}` of a file, read in 1 MiB blocks (blocking: run in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


@attrs.define
class UploadWindow:
    """The uploader's view of the server's replies: bytes it has on disk, per file."""

    chunk: int
    received: dict[int, int] = attrs.Factory(dict)
    refused: dict[str, Any] | None = None  # INVALID_CHUNK details, until handled
    _changed: trio.Event = attrs.Factory(trio.Event)

    def acknowledged(self, file: int, received: int) -> None:
        self.received[file] = received
        self._wake()

    def refuse(self, error: ServerError) -> None:
        """An INVALID_CHUNK. Errors: the error itself unless it asks for smaller chunks."""
        limit = error.details.get("max_chunk_bytes")
        if not isinstance(limit, int) or not MIN_CHUNK <= limit < self.chunk:
            raise error
        self.refused = error.details
        self._wake()

    async def changed(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def send_file(
    send: Callable[[bytes], Awaitable[None]],
    job_id: str,
    file: int,
    path: Path,
    size: int,
    window: UploadWindow,
) -> None:
    """Send one announced upload as chunks; return once the server has all of it."""
    offset = 0
    async with await trio.open_file(path, "rb") as f:
        while (acked := window.received.get(file, 0)) < size:
            if window.refused is not None:  # smaller chunks, from where the server is
                window.chunk = int(window.refused["max_chunk_bytes"])
                offset = int(window.refused.get("expected_offset", acked))
                window.refused = None
                await f.seek(offset)
                continue
            # One chunk alone until the server has taken one: it may want smaller ones.
            limit = (WINDOW if acked else 1) * window.chunk
            if offset < size and offset - acked < limit:
                data = await f.read(min(window.chunk, size - offset))
                if not data:
                    raise TransferError(f"{path.name} shrank while it was being sent")
                await send(encode_header(job_id, path.name, offset=offset) + data)
                offset += len(data)
                continue
            await window.changed()


@attrs.define
class OutputWriter:
    """One delivered output, written to `<directory>/<filename>.part` then renamed."""

    path: Path
    size: int
    sha256: str | None
    written: int = 0
    _file: Any = None  # trio's async file, opened at the first chunk
    _hash: Any = attrs.Factory(hashlib.sha256)

    @classmethod
    def for_output(cls, directory: Path, metadata: dict[str, Any]) -> OutputWriter:
        # The server sanitises names to [A-Za-z0-9._-]; basename guards against any other.
        name = os.path.basename(str(metadata.get("filename") or "output")) or "output"
        return cls(directory / name, int(metadata.get("size_bytes") or 0), metadata.get("sha256"))

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    async def write(self, offset: int, data: bytes) -> None:
        if offset != self.written:
            raise TransferError(f"{self.path.name}: chunk at {offset}, expected {self.written}")
        if self._file is None:
            self._file = await trio.open_file(self.part, "wb")
        await self._file.write(data)
        self._hash.update(data)
        self.written += len(data)

    async def finish(self) -> Path:
        """Errors: TransferError if the file's size or sha256 differs from the announced."""
        if self._file is None:  # an empty output has no chunk before `final`
            self._file = await trio.open_file(self.part, "wb")
        await self._file.aclose()
        digest = self._hash.hexdigest()
        if self.written != self.size or (self.sha256 and digest != self.sha256):
            await self.discard()
            raise TransferError(
                f"{self.path.name}: received {self.written} bytes with sha256 {digest}, "
                f"announced {self.size} bytes with sha256 {self.sha256}"
            )
        await trio.Path(self.part).replace(self.path)
        return self.path

    async def discard(self) -> None:
        if self._file is not None:
            with trio.CancelScope(shield=True):
                await self._file.aclose()
                await trio.Path(self.part).unlink(missing_ok=True)
