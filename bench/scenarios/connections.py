"""Many idle connections: what each costs the server, and how fast a ping comes back."""

from __future__ import annotations

import resource

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from bench.client import PING, open_session
from bench.report import TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import ms, number
from bench.scenarios.usage import server_usage
from bench.stats import Summary


async def connections(bench: Bench, result: ScenarioResult) -> None:
    sizes = bench.sizes
    count = sizes.connections
    url = bench.target.url
    result.params.update(
        connections=count,
        connect_parallel=sizes.connect_parallel,
        pings_in_flight=sizes.pings_in_flight,
        rlimit_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
    watch = bench.target.watch
    async with open_session(url) as reference:
        result.series["ping, 1 connection open"] = [await reference.ping() for _ in range(20)]
    rss_before = watch.memory_kib().get("VmRSS") if watch else None
    opened: list[WebSocketConnection] = []
    failures: list[str] = []
    rtts: list[float] = []
    rss_open: int | None = None
    with trio.move_on_after(sizes.scenario_timeout_s) as deadline:
        async with server_usage(bench, result), trio.open_nursery() as holders:
            handshakes = trio.Semaphore(sizes.connect_parallel)
            all_settled = trio.Event()
            release = trio.Event()

            def settled() -> None:
                if len(opened) + len(failures) >= count:
                    all_settled.set()

            async def hold() -> None:
                await handshakes.acquire()
                handshaking = True
                try:
                    async with open_websocket_url(
                        url, connect_timeout=30, disconnect_timeout=5
                    ) as ws:
                        handshakes.release()
                        handshaking = False
                        opened.append(ws)
                        settled()
                        await release.wait()
                except (HandshakeError, OSError, ConnectionClosed) as exc:
                    if handshaking:
                        failures.append(f"{type(exc).__name__}: {exc}")
                        settled()
                finally:
                    if handshaking:
                        handshakes.release()

            start = trio.current_time()
            for _ in range(count):
                holders.start_soon(hold)
            await all_settled.wait()
            result.metrics["open_s"] = round(trio.current_time() - start, 3)
            await trio.sleep(0.5)  # let the server settle before reading its memory
            rss_open = watch.memory_kib().get("VmRSS") if watch else None
            in_flight = trio.Semaphore(sizes.pings_in_flight)

            async def ping(ws: WebSocketConnection) -> None:
                async with in_flight:
                    sent = trio.current_time()
                    try:
                        await ws.send_message(PING)
                        await ws.get_message()
                    except ConnectionClosed:
                        failures.append("closed before its ping")
                        return
                    rtts.append(trio.current_time() - sent)

            async with trio.open_nursery() as pingers:
                for ws in list(opened):
                    pingers.start_soon(ping, ws)
            release.set()
    if deadline.cancelled_caught:
        result.status, result.reason = TIMED_OUT, f"stopped after {sizes.scenario_timeout_s:g} s"
    result.series[f"ping, {len(opened)} connections open"] = rtts
    result.metrics["opened"] = len(opened)
    result.metrics["failed"] = len(failures)
    if failures:
        result.notes.append(f"first failure: {failures[0]}")
    if rss_before is not None and rss_open is not None:
        result.metrics["rss_before_mib"] = round(rss_before / 1024, 1)
        result.metrics["rss_all_open_mib"] = round(rss_open / 1024, 1)
        if opened:
            per = (rss_open - rss_before) / len(opened)
            result.metrics["rss_per_connection_kib"] = round(per, 1)
    peak = result.server.get("peak_rss_mib")
    result.goals.append(
        Goal(f"server RSS, {count} idle connections", number(peak), "<=", 300, "MiB")
    )
    summary = Summary.of(rtts)
    result.goals.append(
        Goal(f"ping p99, {count} connections", ms(summary.p99 if summary else None), "<", 50, "ms")
    )
