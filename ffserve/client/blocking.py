"""The client from synchronous or asyncio code: one job per call, in its own `trio.run`.

    result = run_job_blocking("ws://...", "thumbnail", ["in.mp4"], out_dir="out")
    # from asyncio: a worker thread runs its own Trio loop
    result = await asyncio.to_thread(run_job_blocking, "ws://...", "compress", ["in.mp4"])

Why a thread and not trio-asyncio: the client is Trio code throughout (trio-websocket,
cancel scopes), and a thread keeps the two loops apart with no extra dependency. The
price: cancelling the asyncio task does not stop the thread, so pass `cancel`, a
`threading.Event`, and set it (e.g. in the task's `except asyncio.CancelledError`): the
job is cancelled on the server and the call raises JobCancelled. `progress` is called in
the worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ffserve.client.connection import open_client
from ffserve.client.errors import JobCancelled, one_error
from ffserve.client.progress import JobProgress
from ffserve.client.result import Result
from ffserve.client.retry import DEFAULT_RETRY, Retry

POLL_S = 0.05


def run_job_blocking(
    url: str,
    operation: str,
    inputs: Sequence[str | os.PathLike[str]],
    options: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[JobProgress], None] | None = None,
    cancel: threading.Event | None = None,
    retry: Retry = DEFAULT_RETRY,
) -> Result:
    """Connect, run one job, disconnect; `retry` as for `open_client`. Errors: as
    `Client.run`; a job cancelled through `cancel` raises JobCancelled."""

    async def main() -> Result:
        async with open_client(url, token, retry=retry) as client:
            with one_error():
                async with trio.open_nursery() as nursery:
                    if cancel is not None:
                        nursery.start_soon(_watch, cancel, nursery.cancel_scope)
                    result = await client.run(
                        operation, inputs, options, out_dir=out_dir, progress=progress
                    )
                    nursery.cancel_scope.cancel()
                    return result
        raise JobCancelled("JOB_CANCELLED", "job cancelled")

    return trio.run(main)


async def _watch(event: threading.Event, scope: trio.CancelScope) -> None:
    # A threading.Event cannot be awaited, and a thread blocked in its wait() would
    # outlive the job: polling is the bounded way.
    while not event.is_set():  # noqa: ASYNC110
        await trio.sleep(POLL_S)
    scope.cancel()
