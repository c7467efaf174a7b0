"""Fairness: one connection queues many jobs, another sends one."""

from __future__ import annotations

import math

import trio

from bench.client import JobTrace, open_session
from bench.report import TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import rounded
from bench.scenarios.jobs import THUMBNAIL
from bench.scenarios.usage import server_usage
from bench.stats import percentile, ratio


async def fairness(bench: Bench, result: ScenarioResult) -> None:
    """One connection queues many jobs, another sends one: does the one wait its turn only?"""
    sizes = bench.sizes
    path = bench.media.small
    payload = bench.payload(path)
    n = sizes.fairness_jobs
    workers = bench.target.workers
    result.params.update(operation="thumbnail", input=path.name, queued_jobs=n, workers=workers)
    many: list[JobTrace] = []
    single: JobTrace | None = None
    with trio.move_on_after(sizes.scenario_timeout_s) as deadline:
        async with (
            open_session(bench.target.url) as crowd,
            open_session(bench.target.url) as loner,
            server_usage(bench, result),
        ):
            for i in range(n):
                many.append(
                    await crowd.submit(f"many-{i}", "thumbnail", THUMBNAIL, payload, path.name)
                )
            # Wait until the server holds all of them (each has its input and is queued or
            # further): then a FIFO would make the single job wait behind all that remain.
            for trace in many:
                await trace.accepted.wait()
            single = await loner.submit("single", "thumbnail", THUMBNAIL, payload, path.name)
            with trio.move_on_after(sizes.job_timeout_s):
                await single.done.wait()
                for trace in many:
                    await trace.done.wait()
    if deadline.cancelled_caught:
        result.status, result.reason = TIMED_OUT, f"stopped after {sizes.scenario_timeout_s:g} s"
    runs = [t.processed - t.running for t in many if t.running and t.processed]
    job_s = percentile(runs, 50) if runs else None
    result.series["crowd job FFmpeg run"] = runs
    result.metrics["crowd_errors"] = sum(1 for t in many if not t.ok)
    if single is None or single.queued is None or single.running is None:
        result.notes.append("the single job never started; nothing to judge")
        result.goals.append(Goal("single job wait after a worker frees / one job", None, "<=", 1))
        return
    waiting_ahead = sum(
        1
        for t in many
        if t.queued and t.queued < single.queued and (t.running or math.inf) > single.queued
    )
    started_between = sum(
        1 for t in many if t.running and single.queued < t.running < single.running
    )
    freed = [t.processed for t in many if t.processed and t.processed > single.queued]
    first_free = min(freed) if freed else None
    wait = single.running - single.queued
    after_free = max(0.0, single.running - first_free) if first_free else wait
    result.metrics["single_wait_s"] = round(wait, 3)
    result.metrics["single_wait_after_worker_free_s"] = round(after_free, 3)
    result.metrics["one_job_duration_s"] = rounded(job_s)
    result.metrics["crowd_jobs_waiting_when_single_queued"] = waiting_ahead
    result.metrics["crowd_jobs_started_while_single_waited"] = started_between
    result.metrics["single_error"] = single.error
    if waiting_ahead <= workers:
        result.notes.append(
            f"only {waiting_ahead} crowd jobs were still waiting when the single job queued: "
            "a FIFO would not have made it wait long either"
        )
    result.goals.append(
        Goal(
            "single job wait after a worker frees / one job",
            rounded(ratio(after_free, job_s)),
            "<=",
            1.0,
        )
    )
