"""The scenarios of issue 5, by name in the order they run, and how one is run.

Each fills one `ScenarioResult` and stops by itself. Every scenario runs under a deadline;
what was measured before it is still reported, with status `timed_out`. A module a family:
`jobs` (latency and throughput against plain FFmpeg, through `comparison`), `responsiveness`
(a large upload with side pings), `connections`, `fairness`, `big_file`; and two that
run only when asked for by name (`OPT_IN`): `abuse` (issue 11's attacks, with `attacks`)
and `cluster` (issue 14: instances behind HAProxy,
with `bench.balancer`).
"""

from __future__ import annotations

from bench.report import ScenarioResult
from bench.scenarios import (
    abuse,
    big_file,
    cluster,
    connections,
    fairness,
    jobs,
    responsiveness,
)
from bench.scenarios.context import Bench, Scenario, Sizes

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "small_job_latency": (
        "small job latency: thumbnail, 2 s 640x360, concurrency 1",
        jobs.small_job_latency,
    ),
    "throughput": (
        "throughput: thumbnail, concurrency 16, side pings every 50 ms",
        jobs.throughput,
    ),
    "long_job": ("long job: compress preset medium, 10 s 1280x720", jobs.long_job),
    "large_upload": (
        "responsiveness during a large v1 upload (one message)",
        responsiveness.large_upload,
    ),
    "connections": ("idle connections, then one ping each", connections.connections),
    "fairness": ("fairness: one crowded connection and one single job", fairness.fairness),
    "big_file": ("big file: chunked upload, stream copy, chunked delivery", big_file.big_file),
    "abuse": (
        "abuse: a victim's small jobs and side pings, idle and during each attack",
        abuse.abuse,
    ),
    "cluster": (
        "cluster: 1 vs 2 one-core instances behind HAProxy, a rolling restart, a kill -9",
        cluster.cluster,
    ),
}

# Not in the default run: `abuse` takes about a minute and a half, measures safety rather
# than cost against plain FFmpeg, and leaves the server with work to shed (connections its
# quotas refused, jobs it cancels) that would colour the figures of whatever ran after it.
# `cluster` (issue 14) starts instances and HAProxy of its own, pinned to cores, and needs
# the haproxy executable.
OPT_IN = frozenset({"abuse", "cluster"})
DEFAULT_SCENARIOS = [name for name in SCENARIOS if name not in OPT_IN]


async def run_scenario(bench: Bench, name: str) -> ScenarioResult:
    """Run one scenario; its failure is reported in its result, not raised."""
    title, scenario = SCENARIOS[name]
    result = ScenarioResult(name, title)
    try:
        await scenario(bench, result)
    except Exception as exc:  # the report must still come out
        result.status = "failed"
        result.reason = f"{type(exc).__name__}: {exc}"
    return result


__all__ = ["DEFAULT_SCENARIOS", "OPT_IN", "SCENARIOS", "Bench", "Sizes", "run_scenario"]
