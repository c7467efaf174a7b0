"""Jobs through the service against the same jobs through plain FFmpeg.

Service and plain-FFmpeg runs alternate in batches (plain, service, service, plain,
...): a slow drift of the machine (other people's builds on two shared cores) then
weighs on both sides alike, and the ratios stay meaningful when absolute times do not.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.baseline import Batch
from bench.client import JobTrace, Session, open_session
from bench.pinger import PingLog
from bench.report import TIMED_OUT, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import ms, rounded
from bench.scenarios.usage import server_usage
from bench.stats import percentile, rate, ratio


async def service_batch(
    sessions: list[Session],
    n: int,
    operation: str,
    options: dict[str, Any],
    path: Path,
    payload: bytes,
    *,
    prefix: str,
    job_limit_s: float,
) -> tuple[Batch, list[JobTrace]]:
    """Run `n` jobs, one at a time on each session (so concurrency = len(sessions))."""
    numbers = iter(range(n))
    traces: list[JobTrace] = []

    async def worker(session: Session) -> None:
        for i in numbers:
            trace = await session.submit(f"{prefix}-{i}", operation, options, payload, path.name)
            traces.append(trace)
            with trio.move_on_after(job_limit_s):
                await trace.done.wait()
            trace.fail(f"no result within {job_limit_s:g} s")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for session in sessions:
            nursery.start_soon(worker, session)
    wall = trio.current_time() - start
    latencies = tuple(t.latency for t in traces if t.ok and t.latency is not None)
    errors = tuple(t.error or "no output" for t in traces if not t.ok)
    return Batch(latencies, wall, errors), traces


@asynccontextmanager
async def open_sessions(url: str, count: int) -> AsyncIterator[list[Session]]:
    async with trio.open_nursery() as nursery:
        sessions: list[Session] = []
        release = trio.Event()

        async def hold(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_session(url) as session:
                sessions.append(session)
                task_status.started()
                await release.wait()

        for _ in range(count):
            await nursery.start(hold)
        yield sessions
        release.set()


@attrs.define
class Comparison:
    """Service and plain-FFmpeg batches of one job, gathered for one scenario."""

    service: list[Batch] = attrs.Factory(list)
    plain: list[Batch] = attrs.Factory(list)
    traces: list[JobTrace] = attrs.Factory(list)

    def fill(self, result: ScenarioResult, *, compare_latency: bool) -> None:
        result.series["service"] = [x for b in self.service for x in b.latencies]
        result.series["plain ffmpeg"] = [x for b in self.plain for x in b.latencies]
        if compare_latency:
            result.compare = ("service", "plain ffmpeg")
        else:
            result.notes.append(
                "service latency includes waiting for a worker (more clients than workers); "
                "plain FFmpeg's does not: compare throughput, not latency, here"
            )
        done = sum(len(b.latencies) for b in self.service)
        plain_done = sum(len(b.latencies) for b in self.plain)
        service_rate = rate(done, sum(b.wall for b in self.service))
        plain_rate = rate(plain_done, sum(b.wall for b in self.plain))
        errors = [e for b in self.service for e in b.errors]
        result.metrics["service_jobs_per_s"] = rounded(service_rate)
        result.metrics["plain_ffmpeg_jobs_per_s"] = rounded(plain_rate)
        result.metrics["throughput_ratio"] = rounded(ratio(service_rate, plain_rate))
        result.metrics["service_errors"] = len(errors)
        for phase, seconds in phase_medians(self.traces).items():
            result.metrics[f"service_phase_p50_ms.{phase}"] = ms(seconds)
        # Noise-robust view: what the service adds around FFmpeg, over plain FFmpeg's p50.
        # On a shared machine FFmpeg's own run time swings by more than the targets.
        overhead = [
            t.latency - (t.processed - t.running)
            for t in self.traces
            if t.ok and t.latency is not None and t.running and t.processed
        ]
        plain_p50 = percentile(result.series["plain ffmpeg"], 50) if plain_done else None
        if compare_latency and overhead and plain_p50:
            added = percentile(overhead, 50)
            result.metrics["service_overhead_outside_ffmpeg_p50_ms"] = ms(added)
            result.metrics["ratio_from_overhead"] = rounded((plain_p50 + added) / plain_p50)
        if errors:
            result.notes.append(f"first service error: {errors[0]}")


PHASES = (
    # (name, from, to): what the client saw of a job, step by step.
    ("send", "submitted", "uploaded"),
    ("input_write_probe", "uploaded", "queued"),
    ("wait_for_worker", "queued", "running"),
    ("ffmpeg", "running", "processed"),
    ("verify_probe", "processed", "completed"),
    ("deliver", "completed", "delivered"),
)


def phase_medians(traces: list[JobTrace]) -> dict[str, float | None]:
    """Where a job's time goes, as the client sees it: the median of each step.

    Progress messages may be dropped by a busy server (they are offered, not queued),
    so each step counts only the jobs that reported both of its ends.
    """
    medians: dict[str, float | None] = {}
    for name, start, end in PHASES:
        spans = [
            getattr(t, end) - getattr(t, start)
            for t in traces
            if t.ok and getattr(t, start) is not None and getattr(t, end) is not None
        ]
        medians[name] = percentile(spans, 50) if spans else None
    return medians


async def interleave(
    batches: int,
    run_service: Callable[[int], Awaitable[Batch]],
    run_plain: Callable[[int], Awaitable[Batch]],
    comparison: Comparison,
    pings: PingLog | None = None,
) -> None:
    """plain, service, service, plain, plain, service, ...: each side leads every other time."""
    for i in range(batches):
        order = ("plain", "service") if i % 2 == 0 else ("service", "plain")
        for side in order:
            if pings is not None:
                pings.begin(side)
            if side == "service":
                comparison.service.append(await run_service(i))
            else:
                comparison.plain.append(await run_plain(i))
            if pings is not None:
                pings.end()


async def compare_jobs(
    bench: Bench,
    result: ScenarioResult,
    *,
    operation: str,
    options: dict[str, Any],
    path: Path,
    n: int,
    batch: int,
    concurrency: int,
    pings: PingLog | None = None,
) -> Comparison:
    plain = await bench.plain(operation, options, path)
    parallelism = min(concurrency, bench.target.workers)
    result.params.update(
        operation=operation,
        options=json.dumps(options),
        input=path.name,
        n=n,
        batch=batch,
        concurrency=concurrency,
        plain_parallelism=parallelism,
        plain_command=" ".join(plain.command(Path("<dir>"))),
    )
    payload = bench.payload(path)
    comparison = Comparison()
    batches = max(1, math.ceil(n / batch))
    sizes = [n // batches + (1 if i < n % batches else 0) for i in range(batches)]
    with trio.move_on_after(bench.sizes.scenario_timeout_s) as deadline:
        async with open_sessions(bench.target.url, concurrency) as sessions:

            async def run_service(i: int) -> Batch:
                done, traces = await service_batch(
                    sessions,
                    sizes[i],
                    operation,
                    options,
                    path,
                    payload,
                    prefix=f"{result.name}-{i}",
                    job_limit_s=bench.sizes.job_timeout_s,
                )
                comparison.traces += traces
                return done

            async def run_plain(i: int) -> Batch:
                return await plain.run_batch(sizes[i], parallelism)

            async with server_usage(bench, result):
                await interleave(batches, run_service, run_plain, comparison, pings)
    if deadline.cancelled_caught:
        result.status, result.reason = (
            TIMED_OUT,
            f"stopped after {bench.sizes.scenario_timeout_s:g} s",
        )
    comparison.fill(result, compare_latency=concurrency <= parallelism)
    return comparison
