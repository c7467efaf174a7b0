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
from collections.abc import Hashable, Sequence
from pathlib import Path
from types import TracebackType

import attrs
import trio

from ffserve.config import Config
from ffserve.errors import AdmissionError, ErrorCode, JobError
from ffserve.jobs.pool import WorkerPool
from ffserve.jobs.quota import Quota, Quotas


@attrs.define(eq=False)
class ConnectionShare:
    """One connection's admitted jobs, against `jobs.per_connection_limit`, and the client
    it belongs to (a token's subject or an address) with that client's quota."""

    limit: int
    client: Hashable
    quota: Quota
    admitted: int = 0


@attrs.define(eq=False)
class Admission:
    config: Config
    pool: WorkerPool
    workspace: Path
    draining: bool = False
    # Bytes of temp disk promised to announced (chunked) uploads of live jobs.
    reserved_bytes: int = 0
    quotas: Quotas = attrs.Factory(Quotas)

    def admit(
        self, share: ConnectionShare, operation: str, upload_sizes: Sequence[int] = ()
    ) -> Ticket:
        """Let a job in, or say why not.

        Errors: AdmissionError: TOO_LARGE (an announced file over the limit, or more than
        the temp disk can take now), SHUTTING_DOWN, BUSY (its connection's limit, or the
        pool's queue), QUOTA_EXCEEDED (its client's quota).
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
            raise self.pool.busy("too many active jobs on this connection")
        self.pool.check()
        self.quotas.start_job(share.client, share.quota, operation, total, trio.current_time)
        # Nothing can fail from here on: every place is taken together.
        self.pool.admit()
        share.admitted += 1
        self.reserved_bytes += total
        return Ticket(self, share, total)

    @property
    def out_of_disk(self) -> bool:
        """Whether the temp disk is down to its reserve (what live jobs announced counted
        as used): no job with an input could be let in now."""
        return self.available() <= 0

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
    receiving: bool = True  # its input is not complete yet
    _closed: bool = False

    @property
    def max_input_bytes(self) -> int:
        """The largest input this job may send: the server's limit or its client's quota."""
        return min(self._admission.config.max_upload_bytes, self._share.quota.input_bytes)

    def input_done(self) -> None:
        """Its input is in: it leaves its client's queued_jobs quota for the shared queue.
        Errors: AdmissionError(BUSY) when the queue has filled meanwhile."""
        self._admission.pool.ready()
        self.receiving = False
        self._admission.quotas.input_done(self._share.client)

    def ran(self, seconds: float) -> None:
        """It ran FFmpeg for `seconds`, against its client's hourly quota."""
        self._admission.quotas.ran(self._share.client, seconds, trio.current_time())

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
        self._admission.pool.discharge(receiving=self.receiving)
        self._admission.quotas.end_job(self._share.client, receiving=self.receiving)
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
