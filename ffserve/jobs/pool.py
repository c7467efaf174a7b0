"""The worker pool: admission control, and fair hand-out of FFmpeg slots.

Admission is counted from `start_job` until the job ends. A job still receiving its input
is not in the queue yet (it counts against its own client's quota, `ffserve.jobs.quota`):
more than `capacity + queue_limit` jobs past their input is BUSY, so uploads that never
come cannot fill the queue for everybody else. Slots are handed out round-robin across owners
(connections), FIFO within one owner, so one client with fifty queued jobs cannot
starve another client's single job. A plain `trio.CapacityLimiter` is FIFO across
everybody, which is exactly that starvation.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import attrs
import trio

from ffserve.errors import AdmissionError, ErrorCode


@attrs.define(eq=False)
class _Waiter:
    owner: Hashable
    event: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class WorkerPool:
    capacity: int
    queue_limit: int
    # The hint of a BUSY refusal (`details.retry_after_s`): seconds after which a place
    # may well be free again (`jobs.retry_after_s`).
    retry_after_s: float = 2.0
    running: int = 0
    admitted: int = 0
    receiving: int = 0  # admitted jobs whose input is not complete
    _queues: OrderedDict[Hashable, deque[_Waiter]] = attrs.Factory(OrderedDict)
    _idle: trio.Event = attrs.Factory(trio.Event)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def queued(self) -> int:
        """Admitted jobs not holding a slot (receiving input or waiting for a worker)."""
        return self.admitted - self.running

    @property
    def full(self) -> bool:
        return self.admitted - self.receiving >= self.capacity + self.queue_limit

    def check(self) -> None:
        """Errors: AdmissionError(BUSY) when the queue is full."""
        if self.full:
            raise self.busy(
                f"server busy: {self.running} jobs running and {self.queued} queued; retry later"
            )

    def busy(self, message: str) -> AdmissionError:
        """A BUSY refusal, with its retry hint in `details.retry_after_s`."""
        return AdmissionError(
            message, code=ErrorCode.BUSY, details={"retry_after_s": self.retry_after_s}
        )

    def admit(self) -> None:
        """Count a job that is receiving its input; `ready` once it is in, `discharge`
        when it ends. Errors: AdmissionError(BUSY) when the queue is full."""
        self.check()
        self.admitted += 1
        self.receiving += 1

    def ready(self) -> None:
        """The job's input is in: it takes a place in the queue.
        Errors: AdmissionError(BUSY) when the queue has filled meanwhile."""
        self.check()
        self.receiving -= 1

    def discharge(self, *, receiving: bool) -> None:
        self.admitted -= 1
        if receiving:
            self.receiving -= 1
        if self.admitted == 0:
            self._idle.set()
            self._idle = trio.Event()

    async def wait_idle(self) -> None:
        """Return once no job is admitted (used to drain on shutdown)."""
        if self.admitted:
            await self._idle.wait()

    @asynccontextmanager
    async def slot(self, owner: Hashable) -> AsyncIterator[None]:
        """Hold one of `capacity` worker slots, waiting fairly for it.

        Cancellation: a waiter cancelled before it is handed a slot leaves the queue; one
        cancelled just after being handed a slot passes it on.
        """
        if self.running < self.capacity and not self._queues:
            self.running += 1
        else:
            waiter = _Waiter(owner)
            self._queues.setdefault(owner, deque()).append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.event.is_set():
                    self._release()
                else:
                    self._forget(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.owner]
        queue.remove(waiter)
        if not queue:
            del self._queues[waiter.owner]

    def _release(self) -> None:
        """Give the freed slot to the next owner in turn, or put it back."""
        if not self._queues:
            self.running -= 1
            return
        owner, queue = next(iter(self._queues.items()))
        waiter = queue.popleft()
        # The owner goes to the back of the line: round-robin between owners.
        del self._queues[owner]
        if queue:
            self._queues[owner] = queue
        waiter.event.set()  # the slot passes straight to the waiter; `running` is unchanged
