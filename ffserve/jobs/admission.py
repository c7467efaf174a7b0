"""Admission: whether a job may start, and what it holds for as long as it lives.

A job is let in against, in this order: each announced upload's size, the temp disk's
free space (less the reserve and what other live jobs have announced), the drain, its
connection's job limit, and the worker pool's admission queue. What it takes (a place on
its connection, a place in the pool's queue, reserved disk bytes) it holds as one
`Ticket`, and gives back all at once when the ticket is closed, however the job ends:
no path can keep a place or reserved bytes past its job.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import attrs

from ffserve.config import Config
from ffserve.errors import AdmissionError, ErrorCode, JobError
from ffserve.jobs.pool import WorkerPool


@attrs.define(eq=False)
class ConnectionShare:
    """One connection's admitted jobs, against `jobs.per_connection_limit`."""

    limit: int
    admitted: int = 0


@attrs.define(eq=False)
class Admission:
    config: Config
    pool: WorkerPool
    workspace: Path
    draining: bool = False
    # Bytes of temp disk promised to announced (chunked) uploads of live jobs.
    reserved_bytes: int = 0

    def admit(self, share: ConnectionShare, upload_sizes: Sequence[int] = ()) -> Ticket:
        """Let a job in, or say why not.

        Errors: AdmissionError: TOO_LARGE (an announced file over the limit, or more than
        the temp disk can take now), SHUTTING_DOWN, BUSY (its connection's limit, or the
        pool's queue).
        """
        config = self.config
        for n, size in enumerate(upload_sizes):
            if size > config.max_upload_bytes:
                raise AdmissionError(
                    f"input.files[{n}] is {size} bytes; the limit is {config.max_upload_bytes}",
                    code=ErrorCode.TOO_LARGE,
                )
        total = sum(upload_sizes)
        # Announced (chunked) uploads only: v1 sizes are not known yet. The refusal names
        # only what was asked for: the disk's free space is the operator's business, and
        # would tell a client what other clients' jobs are storing.
        if upload_sizes and total > self.available():
            raise AdmissionError(
                f"not enough temporary disk space for {total} bytes of upload right now",
                code=ErrorCode.TOO_LARGE,
            )
        if self.draining:
            raise AdmissionError("server is shutting down", code=ErrorCode.SHUTTING_DOWN)
        if share.admitted >= share.limit:
            raise AdmissionError("too many active jobs on this connection", code=ErrorCode.BUSY)
        self.pool.admit()
        # Nothing can fail from here on: every place is taken together.
        share.admitted += 1
        self.reserved_bytes += total
        return Ticket(self, share, total)

    def available(self) -> int:
        """Temp disk bytes a job may still write: free space, less the reserve and what
        live jobs have announced and not yet written."""
        free = shutil.disk_usage(self.workspace).free
        return free - self.config.reserve_bytes - self.reserved_bytes


@attrs.define(eq=False)
class Ticket:
    """What one admitted job holds; `close` (or leaving `with`) gives it all back, once."""

    _admission: Admission
    _share: ConnectionShare
    reserved_bytes: int
    _closed: bool = False

    def stored(self, size: int) -> None:
        """`size` bytes of an announced upload are on disk: they show in the disk's free
        space now, so stop reserving them too."""
        self.reserved_bytes -= size
        self._admission.reserved_bytes -= size

    def check_room(self, size: int) -> None:
        """Before writing `size` bytes whose total was not announced (a v1 upload, a URL
        download): they must fit in what the disk has left above the reserve.

        Errors: JobError(TOO_LARGE).
        """
        if size > self._admission.available():
            raise JobError(
                "not enough temporary disk space for this input right now",
                code=ErrorCode.TOO_LARGE,
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._share.admitted -= 1
        self._admission.pool.discharge()
        self._admission.reserved_bytes -= self.reserved_bytes
        self.reserved_bytes = 0

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
