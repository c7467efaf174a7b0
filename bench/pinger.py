"""The side connection: pings every `interval` seconds and prints each round trip.

It runs in its own process (`python -m bench.pinger URL`) so that the bench's own work
(framing a 200 MB upload, reading sixteen connections) cannot delay it: what it
measures is the server. Each line is `<sent, CLOCK_MONOTONIC seconds> <rtt seconds>`;
monotonic time is system-wide, so the bench can tell which phase a ping fell in.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from bench.client import PING

PONG_TIMEOUT_S = 5.0


@attrs.frozen
class Phase:
    label: str
    start: float  # time.monotonic()
    end: float


@attrs.define
class PingLog:
    """Round trips as (sent at, rtt), and the phases they are sorted into."""

    samples: list[tuple[float, float]] = attrs.Factory(list)
    phases: list[Phase] = attrs.Factory(list)
    _open: tuple[str, float] | None = None

    def begin(self, label: str) -> None:
        self._open = (label, time.monotonic())

    def end(self) -> None:
        if self._open is not None:
            self.phases.append(Phase(self._open[0], self._open[1], time.monotonic()))
            self._open = None

    def during(self, label: str) -> list[float]:
        spans = [p for p in self.phases if p.label == label]
        return [rtt for sent, rtt in self.samples if any(p.start <= sent < p.end for p in spans)]


def _is_pong(message: str | bytes) -> bool:
    if not isinstance(message, str):
        return False
    try:
        data = json.loads(message)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "pong"


async def ping_forever(url: str, interval: float, max_seconds: float) -> None:
    async with open_websocket_url(url, connect_timeout=30, disconnect_timeout=2) as ws:
        print("ready", flush=True)
        with trio.move_on_after(max_seconds):
            next_at = trio.current_time()
            while True:
                sent = time.monotonic()
                start = trio.current_time()
                with trio.move_on_after(PONG_TIMEOUT_S):
                    await ws.send_message(PING)
                    while not _is_pong(await ws.get_message()):
                        pass
                rtt = trio.current_time() - start
                print(f"{sent:.6f} {rtt:.6f}", flush=True)
                # Fixed schedule; a late pong does not cause a burst of catch-up pings.
                next_at = max(next_at + interval, trio.current_time())
                await trio.sleep_until(next_at)


@asynccontextmanager
async def open_pinger(url: str, interval: float, max_seconds: float) -> AsyncIterator[PingLog]:
    """Run a pinger process for the duration of the block; its samples land in the log."""
    log = PingLog()
    args = [sys.executable, "-m", "bench.pinger", url, "--interval", str(interval)]
    args += ["--max-seconds", str(max_seconds)]
    process = await trio.lowlevel.open_process(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    ready = trio.Event()

    async def read_lines() -> None:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line == b"ready":
                    ready.set()
                elif line:
                    sent, rtt = (float(x) for x in line.split())
                    log.samples.append((sent, rtt))
        ready.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_lines)
            with trio.fail_after(30):
                await ready.wait()
            yield log
            process.terminate()
    finally:
        with trio.move_on_after(5, shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pinger")
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=math.inf)
    args = parser.parse_args(argv)
    try:
        trio.run(ping_forever, args.url, args.interval, args.max_seconds)
    except (ConnectionClosed, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
