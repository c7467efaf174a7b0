"""The cluster the `cluster` scenario measures: ffserve instances behind HAProxy.

Each instance is `python -m ffserve serve` under `taskset -c CPU` (FFmpeg and ffprobe,
its children, inherit the one core) with one worker slot, on free loopback ports, taking
PROXY v2 from 127.0.0.2 only. HAProxy runs `deploy/haproxy.cfg` as `just cluster` renders
it (scripts.cluster.render), connecting from 127.0.0.2, so the bench can also reach an
instance directly from 127.0.0.1, with no PROXY header, to measure what the balancer costs.

HAProxy's admin socket is how the scenario sees and steers it: `show stat` for a server's
state (UP, DOWN, MAINT...), `disable server` / `enable server` to run on one instance.
Everything is stopped and reaped on the way out, whatever happened.
"""

from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from bench.procstat import CLOCK_TICKS, ProcessWatch
from bench.server import REPO, free_port
from scripts.cluster import TEMPLATE, Instance, find_haproxy, instance_env, render

PROXY_SOURCE = "127.0.0.2"  # HAProxy's address towards the instances, the trusted one
BACKEND = "ffserve"
START_WITHIN_S = 30.0
STOP_WITHIN_S = 30.0  # drain_timeout_s (10 s) + ffserve's own 10 s bound + a margin


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ClusterError(Exception):
    """The cluster could not be started (HAProxy missing, an instance not ready...)."""


@attrs.define(eq=False)
class Node:
    instance: Instance
    cpu: int
    temp: Path
    log: Path
    process: trio.Process | None = None

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def direct_url(self) -> str:
        return f"ws://{self.instance.host}:{self.instance.port}/"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@attrs.define(eq=False)
class Cluster:
    nodes: list[Node]
    url: str  # through HAProxy
    stats_socket: Path
    _http: httpx.AsyncClient
    haproxy: trio.Process | None = None

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds so far: of this process (the bench's clients), of HAProxy, and of
        each core, busy (everybody's work, steal included) and stolen by the hypervisor."""
        haproxy = ProcessWatch(self.haproxy.pid).cpu() if self.haproxy is not None else None
        used = {"client": _own_cpu_s(), "haproxy": haproxy.total if haproxy else 0.0}
        used.update(core_seconds())
        return used

    async def start(self, node: Node) -> None:
        """Start `node` pinned to its core and wait until its /ready says 200."""
        env = {
            **os.environ,
            **instance_env(node.instance, node.temp, proxy=PROXY_SOURCE),
            "FFSERVE_JOBS_MAX_CONCURRENT": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        args = ["taskset", "-c", str(node.cpu), sys.executable, "-m", "ffserve", "serve"]
        args += ["--config", str(REPO / "config.toml")]
        async with await trio.open_file(node.log, "ab") as log:
            node.process = await trio.lowlevel.open_process(
                args,
                env=env,
                cwd=str(REPO),
                stdin=subprocess.DEVNULL,
                stdout=log.wrapped,
                stderr=log.wrapped,
            )
        with trio.move_on_after(START_WITHIN_S):
            while node.process.poll() is None:
                try:
                    if (await self._http.get(node.instance.ready_url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)
        tail = (await trio.Path(node.log).read_text(errors="replace"))[-2000:]
        raise ClusterError(f"{node.name} not ready (exit code {node.process.poll()}):\n{tail}")

    async def stop(self, node: Node, signum: int = signal.SIGTERM) -> None:
        """Signal `node` (SIGTERM: it drains) and wait for it to exit; kill it past the bound."""
        process = node.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signum)
        with trio.move_on_after(STOP_WITHIN_S):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def command(self, line: str) -> str:
        """One command on HAProxy's admin socket, and its answer."""
        stream = await trio.open_unix_socket(str(self.stats_socket))
        async with stream:
            await stream.send_all(line.encode() + b"\n")
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    async def states(self) -> dict[str, str]:
        """Each server of the backend and its state as HAProxy sees it (UP, DOWN, MAINT...)."""
        text = (await self.command("show stat")).lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_state(self, node: Node, *wanted: str, within_s: float = 30.0) -> float:
        """Poll until HAProxy has `node` in one of `wanted` states; the seconds it took.
        Errors: trio.TooSlowError past `within_s`."""
        start = trio.current_time()
        with trio.fail_after(within_s):
            while True:
                state = (await self.states()).get(node.name, "").split()
                if state[:1] and state[0] in wanted:
                    break
                await trio.sleep(0.01)
        return trio.current_time() - start


def core_seconds() -> dict[str, float]:
    """From /proc/stat: per CPU N, `coreN_busy` (all but idle and iowait) and `coreN_steal`."""
    seconds: dict[str, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(f) for f in fields]
            idle = ticks[3] + ticks[4]
            seconds[f"core{name[3:]}_busy"] = (sum(ticks[:8]) - idle) / CLOCK_TICKS
            seconds[f"core{name[3:]}_steal"] = ticks[7] / CLOCK_TICKS
    return seconds


@asynccontextmanager
async def open_cluster(n: int, workdir: Path) -> AsyncIterator[Cluster]:
    """N pinned one-slot instances (round the CPUs) and HAProxy before them, all UP.

    Errors: ClusterError if HAProxy is missing or something does not come up."""
    haproxy = find_haproxy()
    if haproxy is None:
        raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy)")
    cpus = sorted(os.sched_getaffinity(0))
    nodes = []
    for i in range(n):
        instance = Instance(f"ffserve{i + 1}", "127.0.0.1", free_port(), free_port())
        temp = workdir / instance.name
        temp.mkdir(parents=True, exist_ok=True)
        nodes.append(Node(instance, cpus[i % len(cpus)], temp, workdir / f"{instance.name}.log"))
    port, socket_path = free_port(), workdir / "haproxy.sock"
    config = workdir / "haproxy.cfg"
    config.write_text(
        render(
            TEMPLATE.read_text(),
            bind=f"127.0.0.1:{port}",
            instances=[node.instance for node in nodes],
            stats_socket=socket_path,
            source=PROXY_SOURCE,
        )
    )
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        cluster = Cluster(nodes, f"ws://127.0.0.1:{port}/", socket_path, http)
        balancer: trio.Process | None = None
        try:
            for node in nodes:
                await cluster.start(node)
            async with await trio.open_file(workdir / "haproxy.log", "wb") as log:
                try:
                    balancer = await trio.lowlevel.open_process(
                        [haproxy, "-db", "-f", str(config)],
                        stdin=subprocess.DEVNULL,
                        stdout=log.wrapped,
                        stderr=log.wrapped,
                    )
                except OSError as exc:
                    raise ClusterError(f"cannot run {haproxy}: {exc}") from None
            with trio.move_on_after(START_WITHIN_S):
                while True:
                    if socket_path.exists() or balancer.poll() is not None:
                        break
                    await trio.sleep(0.05)
            if balancer.poll() is not None or not socket_path.exists():
                raise ClusterError(f"HAProxy did not start (exit code {balancer.poll()})")
            cluster.haproxy = balancer
            for node in nodes:
                await cluster.wait_state(node, "UP")
            yield cluster
        finally:
            with trio.move_on_after(STOP_WITHIN_S + 10, shield=True):
                async with trio.open_nursery() as nursery:
                    for node in nodes:
                        nursery.start_soon(cluster.stop, node)
                if balancer is not None and balancer.returncode is None:
                    balancer.terminate()
                    await balancer.wait()
            for process in [balancer, *(node.process for node in nodes)]:
                if process is not None and process.returncode is None:
                    process.kill()
