"""The server's shutdown as each connection follows it.

    draining    (server) no new jobs (SHUTTING_DOWN at admission), /ready 503
    overdue     the drain deadline passed: every job still live is stopped, and tells
                its client SHUTTING_DOWN as its last message (docs/protocol.md)
    stopping    no job is left: each connection sends what it still owes its client,
                then the close frame (1001, "server shutting down")

So a client whose job is cut by the drain hears why, and then sees the connection close,
rather than a connection that just drops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
import trio

from ffserve.jobs.job import Job
from ffserve.wire.outbox import Outbox


@attrs.frozen(eq=False)
class Drain:
    overdue: trio.Event = attrs.Factory(trio.Event)
    stopping: trio.Event = attrs.Factory(trio.Event)


async def stop_jobs_when_overdue(drain: Drain, jobs: Callable[[], Iterable[Job]]) -> None:
    """At the drain deadline, stop every job `jobs()` still lists (each reports itself)."""
    await drain.overdue.wait()
    for job in list(jobs()):
        job.shut_down()


async def close_when_stopping(drain: Drain, outbox: Outbox) -> None:
    """On shutdown, once no job is left, close after the frames the client is owed.

    Cancelling the connection at once would drop a result (or an error) that a job
    queued just before the drain ended, and leave the client with no close frame.
    """
    await drain.stopping.wait()
    await outbox.close()
