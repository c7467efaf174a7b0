"""Quotas: how much one client may hold, whoever else is connected.

A client is a token's subject (or, with auth off, an address). Its quota comes from the
`quota` claim of its token where there is one, else from `[quotas]`:

    concurrent_jobs    its jobs admitted at once, on all its connections
    queued_jobs        its jobs still receiving their input at once
    connections        its connections at once
    input_mb           the largest input one of its jobs may send (0: the server's limit)
    ffmpeg_s_per_hour  FFmpeg run time its jobs may use in any hour (0: no limit)
    operations         the operations it may start (empty: all)

A refusal is QUOTA_EXCEEDED naming the quota (`details.quota`). Jobs still receiving
their input count here, against their own client, and not in the shared worker queue:
uploads that never come cannot make the server BUSY for everybody else.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import attrs

from ffserve.config import QuotasConfig
from ffserve.errors import AdmissionError, ErrorCode

HOUR_S = 3600.0


def _refuse(quota: str, message: str) -> AdmissionError:
    return AdmissionError(message, code=ErrorCode.QUOTA_EXCEEDED, details={"quota": quota})


@attrs.frozen
class Quota:
    concurrent_jobs: int
    queued_jobs: int
    connections: int
    input_bytes: int
    ffmpeg_s_per_hour: float
    operations: frozenset[str]

    @classmethod
    def of(cls, defaults: QuotasConfig, claims: Mapping[str, Any]) -> Quota:
        """The quota a token's claims give, each missing or malformed value the default's
        (a token is minted by a trusted back-end; a wrong value must not unlimit it)."""
        raw = claims.get("quota")
        given: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}

        def number(key: str, default: float) -> float:
            value = given.get(key)
            # JSON allows Infinity (and PyJWT reads it): a quota is a finite number.
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                return float(value)
            return default

        operations = given.get("operations", defaults.operations)
        if not isinstance(operations, list | tuple) or not all(
            isinstance(op, str) for op in operations
        ):
            operations = defaults.operations
        return cls(
            concurrent_jobs=int(number("concurrent_jobs", defaults.concurrent_jobs)),
            queued_jobs=int(number("queued_jobs", defaults.queued_jobs)),
            connections=int(number("connections", defaults.connections)),
            input_bytes=int(number("input_mb", defaults.input_mb) * 1024 * 1024) or sys.maxsize,
            ffmpeg_s_per_hour=number("ffmpeg_s_per_hour", defaults.ffmpeg_s_per_hour),
            operations=frozenset(operations),
        )


@attrs.define(eq=False)
class Usage:
    """What one client holds now, over all its connections."""

    connections: int = 0
    jobs: int = 0
    receiving: int = 0
    # (when a run ended, its seconds) for the last hour of FFmpeg runs.
    runs: deque[tuple[float, float]] = attrs.Factory(deque)

    def ffmpeg_seconds(self, now: float) -> float:
        while self.runs and self.runs[0][0] <= now - HOUR_S:
            self.runs.popleft()
        return sum(seconds for _, seconds in self.runs)

    @property
    def idle(self) -> bool:
        return not (self.connections or self.jobs or self.runs)


@attrs.define(eq=False)
class Quotas:
    """Every client's usage, by client key; a key's usage is forgotten once it holds
    nothing, so the table is bounded by the clients connected (and their last hour)."""

    _usage: dict[Hashable, Usage] = attrs.Factory(dict)
    _prune_above: int = 1024

    def usage(self, client: Hashable) -> Usage:
        return self._usage.setdefault(client, Usage())

    def connect(self, client: Hashable, quota: Quota, now: float) -> None:
        """Errors: AdmissionError(QUOTA_EXCEEDED) past `quota.connections`."""
        if len(self._usage) > self._prune_above:
            self._prune(now)
        usage = self.usage(client)
        if usage.connections >= quota.connections:
            raise _refuse("connections", f"at most {quota.connections} connections at once")
        usage.connections += 1

    def disconnect(self, client: Hashable) -> None:
        self.usage(client).connections -= 1
        self._forget_if_idle(client)

    def start_job(
        self,
        client: Hashable,
        quota: Quota,
        operation: str,
        announced_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        """Count a new job, receiving its input. Errors: AdmissionError(QUOTA_EXCEEDED)."""
        usage = self.usage(client)
        if quota.operations and operation not in quota.operations:
            raise _refuse("operations", f"operation {operation!r} is not allowed for this client")
        if announced_bytes > quota.input_bytes:
            raise _refuse("input_mb", f"input of {announced_bytes} bytes; the limit is "
                          f"{quota.input_bytes}")  # fmt: skip
        if usage.jobs >= quota.concurrent_jobs:
            raise _refuse("concurrent_jobs", f"at most {quota.concurrent_jobs} jobs at once")
        if usage.receiving >= quota.queued_jobs:
            raise _refuse(
                "queued_jobs", f"at most {quota.queued_jobs} jobs waiting for their input at once"
            )
        if quota.ffmpeg_s_per_hour and usage.ffmpeg_seconds(clock()) >= quota.ffmpeg_s_per_hour:
            raise _refuse(
                "ffmpeg_s_per_hour",
                f"the {quota.ffmpeg_s_per_hour:g} s of FFmpeg time of the last hour are used up",
            )
        usage.jobs += 1
        usage.receiving += 1

    def input_done(self, client: Hashable) -> None:
        self.usage(client).receiving -= 1

    def end_job(self, client: Hashable, *, receiving: bool) -> None:
        usage = self.usage(client)
        usage.jobs -= 1
        if receiving:
            usage.receiving -= 1
        self._forget_if_idle(client)

    def ran(self, client: Hashable, seconds: float, now: float) -> None:
        """A job of `client` ran FFmpeg for `seconds`, ending at `now`."""
        self.usage(client).runs.append((now, seconds))

    def _prune(self, now: float) -> None:
        """Forget clients whose last run is over an hour old and who hold nothing; amortised:
        the next prune waits until the table has doubled."""
        for client, usage in list(self._usage.items()):
            usage.ffmpeg_seconds(now)
            if usage.idle:
                del self._usage[client]
        self._prune_above = max(1024, 2 * len(self._usage))

    def _forget_if_idle(self, client: Hashable) -> None:
        usage = self._usage.get(client)
        if usage is not None and usage.idle:
            del self._usage[client]
