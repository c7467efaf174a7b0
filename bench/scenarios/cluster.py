"""Issue 14's `cluster` scenario: ffserve instances behind HAProxy (bench.balancer).

Two instances, each pinned to one core with one worker slot; every job is one connection
(connect, start_job, upload, result, close), as `ffserve submit` does, so HAProxy balances
jobs. Four measurements:

* throughput: the same small-job load through HAProxy with one instance (the other put in
  maintenance on HAProxy's admin socket) and with both, in alternating batches (1, 2, 2,
  1, ...) so that drift on the shared machine weighs on both; `throughput_ratio` = 2 / 1.
  Before each batch, as many plain FFmpeg runs of the job pinned to as many cores: what
  the machine itself gives from one core to two in this run (`plain_throughput_ratio`).
* the balancer's cost: jobs one at a time on instance 1, directly (from 127.0.0.1, which
  it does not trust for PROXY headers) and through HAProxy, alternating batches.
* rolling restart under load: SIGTERM instance 1 (it drains), start it again, wait until
  HAProxy has it UP, then instance 2, while clients keep submitting. Jobs submitted,
  completed, lost.
* kill -9 of instance 2 under load: jobs the clients saw fail, and how long until HAProxy
  had the instance DOWN (its admin socket polled every 10 ms).

Clients retry a job (a new connection) on BUSY, SHUTTING_DOWN and a connection lost before
the job was accepted (refused, a handshake refused or cut, closed while sending), at
most `MAX_ATTEMPTS` times with doubling backoff: the retry policy issue 14 gives the
client library, written out here because this branch's `ffserve.client` has no retries
yet. A job cut after its upload is not retried: it is counted as lost.
"""

from __future__ import annotations

import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import HandshakeError

from bench.balancer import Cluster, ClusterError, Node, open_cluster
from bench.baseline import PlainFFmpeg
from bench.client import JobTrace, open_session
from bench.report import NOT_RUN, TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import ms, rounded
from bench.stats import percentile, rate, ratio

THUMBNAIL: dict[str, Any] = {"timestamp": 1.0}
RETRYABLE_CODES = ("BUSY", "SHUTTING_DOWN")
MAX_ATTEMPTS = 8
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


@attrs.define
class Outcome:
    """One job as its client saw it, across its attempts (trio clock)."""

    started: float
    ended: float = 0.0
    latency: float | None = None  # of the attempt that completed
    retried: list[str] = attrs.Factory(list)  # why each retried attempt failed
    failures: list[tuple[float, str]] = attrs.Factory(list)  # when each attempt failed, why
    error: str | None = None  # the last attempt's, when the job was lost

    @property
    def ok(self) -> bool:
        return self.latency is not None


def retryable(error: str) -> bool:
    """Whether the client may submit the job again: the server refused it for now, or no
    job was started (a connection closed after the upload is a job lost)."""
    code = error.split(":", 1)[0]
    return code in RETRYABLE_CODES or error.startswith(("connect: ", "connection closed while"))


async def attempt(url: str, bench: Bench, job_id: str) -> JobTrace | str:
    """One job on a new connection: its trace, or why no job could be started."""
    path = bench.media.small
    trace: JobTrace | None = None
    try:
        async with open_session(url) as session:
            trace = await session.submit(
                job_id, "thumbnail", THUMBNAIL, bench.payload(path), path.name
            )
            with trio.move_on_after(bench.sizes.job_timeout_s):
                await trace.done.wait()
            trace.fail(f"no result within {bench.sizes.job_timeout_s:g} s")
    except (OSError, HandshakeError) as exc:
        if trace is None:
            return f"connect: {type(exc).__name__}"
        trace.fail("connection closed")  # after the job began (a late close: no change)
    return trace


async def run_job(url: str, bench: Bench, job_id: str) -> Outcome:
    """A job with the client's retries."""
    outcome = Outcome(trio.current_time())
    backoff = FIRST_BACKOFF_S
    for number in range(1, MAX_ATTEMPTS + 1):
        result = await attempt(url, bench, f"{job_id}-{number}")
        if isinstance(result, JobTrace) and result.ok:
            outcome.latency = result.latency
            break
        error = result if isinstance(result, str) else result.error or "no output"
        outcome.failures.append((trio.current_time(), error.split(":", 1)[0]))
        if not retryable(error) or number == MAX_ATTEMPTS:
            outcome.error = error
            break
        outcome.retried.append(error.split(":", 1)[0])
        await trio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)
    outcome.ended = trio.current_time()
    return outcome


async def batch(
    url: str, bench: Bench, n: int, concurrency: int, prefix: str
) -> tuple[list[Outcome], float]:
    """`n` jobs, `concurrency` at a time; the outcomes and the wall time."""
    numbers = iter(range(n))
    outcomes: list[Outcome] = []

    async def worker() -> None:
        for i in numbers:
            outcomes.append(await run_job(url, bench, f"{prefix}-{i}"))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return outcomes, trio.current_time() - start


async def under_load(
    url: str, bench: Bench, concurrency: int, prefix: str, stop: trio.Event
) -> list[Outcome]:
    """Jobs, `concurrency` at a time, until `stop` (the jobs under way then finish)."""
    outcomes: list[Outcome] = []

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            outcomes.append(await run_job(url, bench, f"{prefix}-{w}-{i}"))
            i += 1

    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    return outcomes


async def only(cluster: Cluster, keep: Node) -> None:
    """Every server but `keep` in maintenance on HAProxy (the admin socket's `disable`)."""
    for node in cluster.nodes:
        if node is not keep:
            await cluster.command(f"disable server ffserve/{node.name}")
            await cluster.wait_state(node, "MAINT")


async def all_up(cluster: Cluster) -> None:
    for node in cluster.nodes:
        await cluster.command(f"enable server ffserve/{node.name}")
        await cluster.wait_state(node, "UP")


def latencies(outcomes: list[Outcome]) -> list[float]:
    return [o.latency for o in outcomes if o.latency is not None]


async def plain_batch(plain: PlainFFmpeg, cpus: list[int], n: int) -> tuple[int, float]:
    """`n` plain FFmpeg runs of the job, one at a time on each of `cpus` (pinned): the
    machine's own scaling from one core to two, the yardstick for the instances'."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, cpu in enumerate(cpus):
            share = n // len(cpus) + (i < n % len(cpus))
            nursery.start_soon(attrs.evolve(plain, cpu=cpu).run_batch, share, 1)
    return n, trio.current_time() - start


async def measure_throughput(cluster: Cluster, bench: Bench, result: ScenarioResult) -> None:
    """Alternating batches (1, 2, 2, 1 instances), each after the same number of plain
    FFmpeg runs pinned to as many cores: the instances' scaling, and the machine's."""
    sizes = bench.sizes
    per_batch = max(2, sizes.throughput_n // 2)
    jobs, wall = {1: 0, 2: 0}, {1: 0.0, 2: 0.0}
    plain_jobs, plain_wall = {1: 0, 2: 0}, {1: 0.0, 2: 0.0}
    cpu: dict[int, Counter[str]] = {1: Counter(), 2: Counter()}
    errors: Counter[str] = Counter()
    plain = await bench.plain("thumbnail", THUMBNAIL, bench.media.small)
    cores = [node.cpu for node in cluster.nodes]
    for round_, count in enumerate((1, 2, 2, 1)):
        done, took = await plain_batch(plain, cores[:count], per_batch)
        plain_jobs[count] += done
        plain_wall[count] += took
        if count == 1:
            await only(cluster, cluster.nodes[0])
        else:
            await all_up(cluster)
        before = cluster.cpu_s()
        outcomes, took = await batch(
            cluster.url, bench, per_batch, sizes.concurrency, f"tp{count}-{round_}"
        )
        after = cluster.cpu_s()
        cpu[count].update({name: after[name] - before[name] for name in after})
        jobs[count] += sum(o.ok for o in outcomes)
        wall[count] += took
        errors.update(o.error or "" for o in outcomes if not o.ok)
        series = f"{count} instance(s), concurrency {sizes.concurrency}"
        result.series.setdefault(series, []).extend(latencies(outcomes))
    await all_up(cluster)
    one, two = rate(jobs[1], wall[1]), rate(jobs[2], wall[2])
    plain_one, plain_two = rate(plain_jobs[1], plain_wall[1]), rate(plain_jobs[2], plain_wall[2])
    plain_ratio = ratio(plain_two, plain_one)
    result.metrics.update(
        one_instance_jobs_per_s=rounded(one, 2),
        two_instances_jobs_per_s=rounded(two, 2),
        throughput_ratio=rounded(ratio(two, one), 3),
        throughput_errors=sum(errors.values()),
        plain_one_core_jobs_per_s=rounded(plain_one, 2),
        plain_two_cores_jobs_per_s=rounded(plain_two, 2),
        plain_throughput_ratio=rounded(plain_ratio, 3),
        throughput_ratio_over_plain=rounded(ratio(ratio(two, one), plain_ratio), 3),
    )
    # Where the cores went during the service batches: what the bench's clients and
    # HAProxy took, how busy each core was (anybody's work) and how much was stolen.
    for count, label in ((1, "one"), (2, "two")):
        for name, seconds in sorted(cpu[count].items()):
            share = seconds / wall[count] if wall[count] else None
            result.metrics[f"{label}_{name}_share"] = rounded(share, 3)
    if errors:
        result.notes.append(f"throughput errors: {dict(errors)}")
    result.goals.append(Goal("throughput, 2 instances / 1 (issue 14)", ratio(two, one), ">=", 1.8))


async def measure_balancer_cost(cluster: Cluster, bench: Bench, result: ScenarioResult) -> None:
    sizes = bench.sizes
    first = cluster.nodes[0]
    await only(cluster, first)
    direct: list[float] = []
    through: list[float] = []
    done = 0
    while done < sizes.small_n:
        step = min(sizes.small_batch, sizes.small_n - done)
        for url, series in ((first.direct_url, direct), (cluster.url, through)):
            outcomes, _ = await batch(url, bench, step, 1, f"lat-{len(series)}")
            series += latencies(outcomes)
        done += step
    await all_up(cluster)
    result.series["direct to instance 1"] = direct
    result.series["through HAProxy (instance 1)"] = through
    result.compare = ("through HAProxy (instance 1)", "direct to instance 1")
    if direct and through:
        for q in (50, 99):
            cost = percentile(through, q) - percentile(direct, q)
            result.metrics[f"balancer_cost_p{q}_ms"] = ms(cost)


async def measure_rolling_restart(cluster: Cluster, bench: Bench, result: ScenarioResult) -> None:
    stop = trio.Event()
    outcomes: list[Outcome] = []
    restarts: dict[str, float] = {}

    async def load() -> None:
        outcomes.extend(
            await under_load(cluster.url, bench, bench.sizes.restart_concurrency, "roll", stop)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        await trio.sleep(1.0)
        for node in cluster.nodes:
            start = trio.current_time()
            await cluster.stop(node, signal.SIGTERM)
            await cluster.start(node)
            await cluster.wait_state(node, "UP")
            restarts[node.name] = trio.current_time() - start
            await trio.sleep(1.0)
        stop.set()
    lost = [o for o in outcomes if not o.ok]
    retried = Counter(reason for o in outcomes for reason in o.retried)
    result.series["job during the rolling restart (retries included)"] = [
        o.ended - o.started for o in outcomes if o.ok
    ]
    result.metrics.update(
        restart_jobs_submitted=len(outcomes),
        restart_jobs_completed=len(outcomes) - len(lost),
        restart_jobs_lost=len(lost),
        restart_jobs_retried=sum(1 for o in outcomes if o.retried),
        restart_retries=sum(retried.values()),
        restart_retry_reasons=", ".join(f"{k} {v}" for k, v in retried.most_common()) or None,
        **{f"restart_{name}_s": rounded(s, 2) for name, s in restarts.items()},
    )
    if lost:
        result.notes.append(f"lost in the rolling restart: {Counter(o.error for o in lost)}")
    result.goals.append(Goal("jobs lost in a rolling restart", len(lost), "<=", 0, "jobs"))


async def measure_kill(cluster: Cluster, bench: Bench, result: ScenarioResult) -> None:
    victim = cluster.nodes[-1]
    stop = trio.Event()
    outcomes: list[Outcome] = []
    killed_at = 0.0

    async def load() -> None:
        outcomes.extend(
            await under_load(cluster.url, bench, bench.sizes.restart_concurrency, "kill", stop)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        await trio.sleep(1.0)
        assert victim.process is not None
        killed_at = trio.current_time()
        victim.process.send_signal(signal.SIGKILL)
        down_after = await cluster.wait_state(victim, "DOWN")
        await trio.sleep(2.0)
        stop.set()
    await victim.process.wait()
    failures = sorted((t - killed_at, why) for o in outcomes for t, why in o.failures)
    failures = [(t, why) for t, why in failures if t >= 0]
    lost = [o for o in outcomes if not o.ok]
    reasons = Counter(why for _, why in failures)
    result.metrics.update(
        kill_jobs_submitted=len(outcomes),
        kill_jobs_failed=len(lost),  # in flight on the killed instance: not retryable
        kill_attempts_failed=len(failures),
        kill_jobs_retried=sum(1 for o in outcomes if o.retried),
        kill_down_after_ms=ms(down_after),
        kill_failure_reasons=", ".join(f"{k} {v}" for k, v in reasons.most_common()) or None,
        kill_first_failure_ms=ms(failures[0][0]) if failures else None,
        kill_last_failure_ms=ms(failures[-1][0]) if failures else None,
    )
    if lost:
        result.notes.append(f"failed by the kill: {Counter(o.error for o in lost)}")


async def cluster(bench: Bench, result: ScenarioResult) -> None:
    result.params.update(
        instances=2,
        worker_slots_each=1,
        cores_each=1,
        operation="thumbnail",
        concurrency=bench.sizes.concurrency,
        restart_concurrency=bench.sizes.restart_concurrency,
        max_attempts=MAX_ATTEMPTS,
    )
    with tempfile.TemporaryDirectory(prefix="cluster-", dir=bench.scratch) as tmp:
        try:
            async with open_cluster(2, Path(tmp)) as running:
                with trio.fail_after(bench.sizes.scenario_timeout_s):
                    await measure_throughput(running, bench, result)
                    await measure_balancer_cost(running, bench, result)
                    await measure_rolling_restart(running, bench, result)
                    await measure_kill(running, bench, result)
        except ClusterError as exc:
            result.status, result.reason = NOT_RUN, str(exc)
        except trio.TooSlowError:
            result.status = TIMED_OUT
            result.reason = f"stopped after {bench.sizes.scenario_timeout_s:g} s"
