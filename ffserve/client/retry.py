"""Trying again, while the server has surely not taken the job.

What is retried: `BUSY` and `SHUTTING_DOWN` in answer to `start_job` (before its `ack`:
the server refused the job, nothing of it runs), a connection that could not be opened
(refused, lost in the handshake, HTTP 502/503/504 from the server or a balancer in front
of it), and a connection lost before the upload began (no `ack` yet, no byte of input
sent). Each attempt after the first opens a new connection, so behind a load balancer
it may well reach another instance (a draining one takes no new connection).

What is never retried: anything once the upload began or the server acknowledged the
job, however it ends (a lost connection, `BUSY` when the queue filled during the upload,
`SHUTTING_DOWN` cutting a running job at the drain deadline). The client cannot tell
then what the server did with it, and sending it again could run the work twice; the
error is raised and the caller decides. So is every other error: a job that failed
would fail again.

Waits grow exponentially (`first_wait_s`, doubled each time, at most `max_wait_s`), are
never shorter than the server's hint (`details.retry_after_s` of `BUSY`, a balancer's
`Retry-After`), and are spread by up to half again at random, so clients refused together
do not come back together. Bounds: `retries` attempts after the first, and no attempt
starts later than `within_s` after the first began. At a bound, the last error is raised,
saying how many attempts were made over how long.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from ffserve.client.errors import ClientError

T = TypeVar("T")


@attrs.frozen
class Retry:
    """How often and for how long to try again; `Retry(retries=0)` tries once."""

    retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    within_s: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    first_wait_s: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    max_wait_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))

    def wait(self, failures: int, hint: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1 for the first)."""
        backoff = min(self.max_wait_s, self.first_wait_s * 2 ** (failures - 1))
        return float(max(backoff, hint or 0.0) * random.uniform(1.0, 1.5))


DEFAULT_RETRY = Retry()
NO_RETRY = Retry(retries=0)


async def retrying(policy: Retry, attempt: Callable[[int], Awaitable[T]]) -> T:
    """`await attempt(n)` for n = 0, 1, ... until it returns, raises an error that is not
    `retryable`, or a bound of `policy` is reached.

    Errors: the last attempt's; when retries were allowed, with `attempts` and `tried_s`
    set (and said in its text).
    Cancellation: a cancel during a wait or an attempt ends the loop at once.
    """
    began = trio.current_time()
    failures = 0
    while True:
        try:
            return await attempt(failures)
        except ClientError as error:
            if not error.retryable:
                raise
            failures += 1
            wait = policy.wait(failures, error.retry_after_s)
            spent = trio.current_time() - began
            if failures > policy.retries or spent + wait > policy.within_s:
                if policy.retries:
                    error.gave_up(failures, spent)
                raise
        await trio.sleep(wait)
