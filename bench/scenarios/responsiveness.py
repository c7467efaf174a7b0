"""Responsiveness: side pings while one large v1 upload goes through."""

from __future__ import annotations

import json
from typing import Any

import trio

from bench.client import JobTrace, open_session
from bench.pinger import open_pinger
from bench.report import TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import MIB, ms, rounded
from bench.scenarios.usage import server_usage
from bench.stats import rate

# What the big upload asks for: a short trim, so the time goes to moving bytes.
TRIM: dict[str, Any] = {"start_time": 0.0, "end_time": 1.0}


async def large_upload(bench: Bench, result: ScenarioResult) -> None:
    """A v1 upload is one WebSocket message: the whole file in one frame."""
    sizes = bench.sizes
    path = bench.media.big
    payload = bench.payload(path)
    result.params.update(
        operation="trim",
        options=json.dumps(TRIM),
        input=path.name,
        upload_mib=round(len(payload) / MIB, 1),
        ping_interval_ms=sizes.ping_interval_s * 1000,
    )
    trace: JobTrace | None = None
    async with open_pinger(
        bench.target.url, sizes.ping_interval_s, sizes.scenario_timeout_s + 60
    ) as pings:
        pings.begin("idle")
        await trio.sleep(1.0)
        pings.end()
        with trio.move_on_after(sizes.scenario_timeout_s) as deadline:
            async with open_session(bench.target.url) as session, server_usage(bench, result):
                pings.begin("upload")
                trace = await session.submit("upload-1", "trim", TRIM, payload, path.name)
                with trio.move_on_after(sizes.job_timeout_s):
                    await trace.done.wait()
                trace.fail(f"no result within {sizes.job_timeout_s:g} s")
                pings.end()
    if deadline.cancelled_caught:
        result.status, result.reason = TIMED_OUT, f"stopped after {sizes.scenario_timeout_s:g} s"
    result.series["side ping (idle)"] = pings.during("idle")
    result.series["side ping (during upload)"] = pings.during("upload")
    if trace is not None:
        if trace.uploaded is not None:
            send_s = trace.uploaded - trace.submitted
            result.metrics["upload_send_s"] = round(send_s, 3)
            result.metrics["upload_send_mib_per_s"] = rounded(rate(len(payload) // MIB, send_s))
        received = trace.queued or trace.running
        if received is not None:
            # The server says "queued" once it has the whole file, written and probed.
            result.metrics["upload_accepted_s"] = round(received - trace.submitted, 3)
            result.metrics["upload_accepted_mib_per_s"] = rounded(
                rate(len(payload) // MIB, received - trace.submitted)
            )
        result.metrics["job_total_s"] = rounded(trace.latency)
        result.metrics["job_error"] = trace.error
    side = result.summary("side ping (during upload)")
    result.goals.append(
        Goal("side ping p99, large upload", ms(side.p99 if side else None), "<", 20, "ms")
    )
