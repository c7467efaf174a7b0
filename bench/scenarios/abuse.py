"""Abuse: does the server stay usable for a well-behaved client while another one attacks it?

A victim connects from 127.0.0.1 and runs small thumbnail jobs one after another, and the
side pinger pings every 50 ms, first on the idle server, then during each attack of issue
11's security review (`attacks`), run from 127.0.0.2 so that the server's per-address
quotas count the attacker apart. Each phase: the attack is put in place, given a moment
to bite, the victim and the pings are measured for `abuse_phase_s`, then the attack's
sockets are all closed and the server is given time to let go of everything.
A victim or pinger that is refused or cut off is a figure, not a failure of the bench.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from urllib.parse import urlsplit

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from bench import media
from bench.client import open_session
from bench.pinger import PONG_TIMEOUT_S, open_pinger
from bench.procstat import ProcessWatch, RssSampler
from bench.report import NOT_RUN, TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.attacks import ATTACKS, Attack, Observed, Plan, open_attacker, tally
from bench.scenarios.context import Bench
from bench.scenarios.figures import MIB, rounded
from bench.scenarios.jobs import THUMBNAIL
from bench.scenarios.usage import server_usage
from bench.server import get_health
from bench.stats import Summary, ratio

IDLE = "idle"
ATTACKER_ADDRESS = "127.0.0.2"
BITE_S = 1.5  # between the attack being in place and the measurement
SETUP_LIMIT_S = 30.0
SETTLE_LIMIT_S = 15.0
VICTIM_JOB_TIMEOUT_S = 30.0
VICTIM_MAX_JOBS = 1000
RECONNECT_PAUSE_S = 0.5
TONE_SECONDS = 120.0
WITHIN = 2.0  # the goal: attacked figures within 2x the idle ones


@attrs.define
class Victim:
    """What the well-behaved client saw in one phase."""

    latencies: list[float] = attrs.Factory(list)
    errors: Counter[str] = attrs.Factory(Counter)


@attrs.define
class PhaseFigures:
    victim: Victim
    observed: Observed | None
    rss_kib: dict[str, int | None]
    settled_s: float | None
    leftover: str | None


async def run_victim(url: str, path_name: str, payload: bytes, seconds: float) -> Victim:
    """Small jobs one after another for `seconds`, reconnecting when refused or cut off."""
    victim = Victim()
    deadline = trio.current_time() + seconds
    jobs = 0
    while trio.current_time() < deadline and jobs < VICTIM_MAX_JOBS:
        try:
            async with open_session(url) as session:
                while trio.current_time() < deadline and jobs < VICTIM_MAX_JOBS:
                    jobs += 1
                    trace = await session.submit(
                        f"victim-{jobs}", "thumbnail", THUMBNAIL, payload, path_name
                    )
                    with trio.move_on_after(VICTIM_JOB_TIMEOUT_S):
                        await trace.done.wait()
                    trace.fail(f"no result within {VICTIM_JOB_TIMEOUT_S:g} s")
                    if trace.ok and trace.latency is not None:
                        victim.latencies.append(trace.latency)
                        continue
                    victim.errors[(trace.error or "no output").split(":")[0]] += 1
                    if trace.error and trace.error.startswith("connection closed"):
                        break
        except* (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError) as group:
            for exc in group.exceptions:
                victim.errors[f"connect: {type(exc).__name__}"] += 1
        await trio.sleep(RECONNECT_PAUSE_S if trio.current_time() < deadline else 0)
    return victim


async def settle(health_url: str | None) -> tuple[float | None, str | None]:
    """Wait until the server holds no connection and no job: (seconds it took, or None and
    what was left after SETTLE_LIMIT_S)."""
    if health_url is None:
        return None, "no /health to ask"
    start = trio.current_time()
    last: dict[str, object] | None = None
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        with trio.move_on_after(SETTLE_LIMIT_S):
            while True:
                last = await get_health(client, health_url)
                if last is not None and not any(
                    last.get(k) for k in ("connections", "running", "queued")
                ):
                    return round(trio.current_time() - start, 2), None
                await trio.sleep(0.1)
    if last is None:
        return None, "/health did not answer"
    return None, ", ".join(f"{k}={last.get(k)}" for k in ("connections", "running", "queued"))


def _rss(watch: ProcessWatch | None) -> int | None:
    return watch.memory_kib().get("VmRSS") if watch is not None else None


async def run_phase(
    bench: Bench, name: str, attack: Attack | None, plan: Plan, result: ScenarioResult
) -> PhaseFigures:
    sizes = bench.sizes
    url = bench.target.url
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    watch = bench.target.watch
    clip = bench.media.small
    observed = Observed() if attack is not None else None
    rss: dict[str, int | None] = {}
    max_seconds = SETUP_LIMIT_S + BITE_S + sizes.abuse_phase_s + VICTIM_JOB_TIMEOUT_S + 30
    async with open_pinger(url, sizes.ping_interval_s, max_seconds) as pings:
        rss["start"] = _rss(watch)
        sampler = RssSampler(watch) if watch is not None else None
        async with trio.open_nursery() as nursery:
            if sampler is not None:
                nursery.start_soon(sampler.sample_every, 0.05)
            if attack is not None and observed is not None:

                async def attack_task(*, task_status: trio.TaskStatus[None]) -> None:
                    async with open_attacker(host, port, ATTACKER_ADDRESS, observed) as attacker:
                        await attack(attacker, plan, task_status=task_status)

                with trio.move_on_after(SETUP_LIMIT_S) as setup:
                    await nursery.start(attack_task)
                if setup.cancelled_caught:
                    result.notes.append(f"{name}: not in place within {SETUP_LIMIT_S:g} s")
                await trio.sleep(BITE_S)
            rss["attack_in_place"] = _rss(watch)
            pings.begin(name)
            victim = await run_victim(url, clip.name, bench.payload(clip), sizes.abuse_phase_s)
            pings.end()
            rss["end"] = _rss(watch)
            nursery.cancel_scope.cancel()
        rss["peak"] = sampler.peak_kib if sampler is not None else None
    result.series[f"side ping ({name})"] = pings.during(name)
    result.series[f"victim job ({name})"] = victim.latencies
    settled_s, leftover = await settle(bench.target.health_url)
    return PhaseFigures(victim, observed, rss, settled_s, leftover)


def record(result: ScenarioResult, name: str, phase: PhaseFigures) -> None:
    pings = result.series[f"side ping ({name})"]
    metrics = result.metrics
    metrics[f"{name}.victim_jobs_ok"] = len(phase.victim.latencies)
    metrics[f"{name}.victim_errors"] = sum(phase.victim.errors.values())
    if phase.victim.errors:
        metrics[f"{name}.victim_error_kinds"] = tally(phase.victim.errors)
    metrics[f"{name}.pings"] = len(pings)
    metrics[f"{name}.pings_unanswered_{PONG_TIMEOUT_S:g}s"] = sum(
        1 for rtt in pings if rtt >= PONG_TIMEOUT_S
    )
    mib = {k: None if v is None else round(v / 1024, 1) for k, v in phase.rss_kib.items()}
    for key in ("start", "end", "peak"):
        metrics[f"{name}.rss_{key}_mib"] = mib[key]
    start, end = phase.rss_kib["start"], phase.rss_kib["end"]
    if start is not None and end is not None:
        metrics[f"{name}.rss_growth_mib"] = round((end - start) / 1024, 1)
    if phase.observed is not None:
        for key, value in phase.observed.figures().items():
            metrics[f"{name}.attacker.{key}"] = value
    metrics[f"{name}.server_idle_again_s"] = phase.settled_s
    if phase.leftover is not None:
        metrics[f"{name}.server_left_holding"] = phase.leftover


def _versus_idle(attacked: Summary | None, idle: Summary | None, field: str) -> float | None:
    """attacked / idle; infinite when the idle phase measured something and the attacked
    one nothing (no job done, no pong): that is the worst outcome, not a missing one."""
    if idle is None:
        return None
    if attacked is None:
        return math.inf
    return rounded(ratio(getattr(attacked, field), getattr(idle, field)), 3)


def judge(result: ScenarioResult, names: list[str]) -> None:
    idle_job = result.summary(f"victim job ({IDLE})")
    idle_ping = result.summary(f"side ping ({IDLE})")
    for name in names:
        if name == IDLE:
            continue
        job = result.summary(f"victim job ({name})")
        ping = result.summary(f"side ping ({name})")
        result.goals.append(
            Goal(f"victim job p50, {name} / idle", _versus_idle(job, idle_job, "p50"), "<=", WITHIN)
        )
        result.goals.append(
            Goal(
                f"side ping p99, {name} / idle", _versus_idle(ping, idle_ping, "p99"), "<=", WITHIN
            )
        )


def _ipv4_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


async def abuse(bench: Bench, result: ScenarioResult) -> None:
    sizes = bench.sizes
    names = [IDLE, *ATTACKS]
    result.params.update(
        phase_s=sizes.abuse_phase_s,
        victim="thumbnail, 2 s 640x360, from 127.0.0.1",
        attacker_address=ATTACKER_ADDRESS,
        flood_connections=sizes.abuse_connections,
        unfinished_connections=sizes.abuse_unfinished,
        ping_interval_ms=sizes.ping_interval_s * 1000,
    )
    host = urlsplit(bench.target.url).hostname or ""
    if not _ipv4_loopback(host):
        result.status = NOT_RUN
        result.reason = f"the attacker binds {ATTACKER_ADDRESS}: needs a 127.x.x.x target"
        judge(result, names)
        return
    directory = bench.scratch / "abuse"
    directory.mkdir(parents=True, exist_ok=True)
    tone = await trio.to_thread.run_sync(
        lambda: media.tone(directory / "tone_120s.flac", TONE_SECONDS, ffmpeg=bench.ffmpeg)
    )
    plan = Plan(
        clip=bench.payload(bench.media.small),
        clip_name=bench.media.small.name,
        tone=bench.payload(tone),
        tone_name=tone.name,
        unfinished_connections=sizes.abuse_unfinished,
        flood_connections=sizes.abuse_connections,
    )
    result.params["tone_flac_mib"] = round(len(plan.tone) / MIB, 2)
    run: list[str] = []
    with trio.move_on_after(sizes.scenario_timeout_s) as deadline:
        async with server_usage(bench, result):
            for name in names:
                phase = await run_phase(bench, name, ATTACKS.get(name), plan, result)
                record(result, name, phase)
                run.append(name)
    if deadline.cancelled_caught:
        result.status, result.reason = TIMED_OUT, f"stopped after {sizes.scenario_timeout_s:g} s"
    judge(result, names)
    if len(run) < len(names):
        result.notes.append(f"phases not run: {', '.join(names[len(run) :])}")
