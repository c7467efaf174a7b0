"""`just cluster N [PORT]`: N ffserve instances behind HAProxy on one machine, until Ctrl-C.

    python -m scripts.cluster 2 --port 8080

Instance i listens on its own loopback address, 127.0.0.(10+i), WebSocket port 8080 and
HTTP port 8081 (as every machine of a real deployment would; `--instance-port` to change
them), with `config.toml` plus environment overrides: PROXY protocol from HAProxy
(trusted_proxies = 127.0.0.1, the address HAProxy connects from) and a temp dir of its
own. HAProxy runs `deploy/haproxy.cfg` with its `bind`, `stats socket` and `server` lines
rewritten for these instances (`render`), on 127.0.0.1:PORT. Every process's output is
shown prefixed with its name.

Ctrl-C (or SIGTERM) stops it all the way a deployment is stopped: each instance is sent
SIGTERM and drains (no new job, /ready 503, admitted jobs finish within
server.drain_timeout_s, then connections close with 1001), HAProxy is sent SIGUSR1 (it
stops listening and lets its connections end); whatever is still there after the drain's
bound is killed. A second Ctrl-C stops the instances at once. The children run in their
own sessions, so the terminal's Ctrl-C reaches only this script, which orders the stop.

`render` and `instance_env` are also used by the bench's `cluster` scenario.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import attrs

from ffserve.config import Config

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "haproxy.cfg"
MAX_INSTANCES = 50
READY_WITHIN_S = 30.0
# ffserve's drain takes up to drain_timeout_s plus this (jobs stopped, connections closed;
# ffserve.service.server); a little more for the process to exit.
DRAIN_MARGIN_S = 15.0


@attrs.frozen
class Instance:
    name: str
    host: str
    port: int  # WebSocket
    http_port: int  # /ready, /health, /metrics

    @property
    def ready_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/ready"


def local_instances(n: int, port: int = 8080) -> list[Instance]:
    """N instances on 127.0.0.11, 127.0.0.12, ...: each its own address, the same ports
    (WebSocket `port`, HTTP the next one)."""
    if not 1 <= n <= MAX_INSTANCES:
        raise ValueError(f"the number of instances must be 1-{MAX_INSTANCES}, not {n}")
    return [Instance(f"ffserve{i}", f"127.0.0.{10 + i}", port, port + 1) for i in range(1, n + 1)]


def render(
    template: str,
    *,
    bind: str,
    instances: Sequence[Instance],
    stats_socket: Path,
    source: str | None = None,
) -> str:
    """`template` (deploy/haproxy.cfg) with its frontend's `bind`, its `stats socket` and its
    backend's `server` lines replaced; everything else kept as written. With `source`,
    HAProxy connects to the instances from that address (the one they trust).

    Errors: ValueError if the template lacks one of those lines (it was edited beyond what
    this understands), or if no instance is given."""
    if not instances:
        raise ValueError("no instance to balance")
    out: list[str] = []
    section = ""
    replaced: set[str] = set()
    for line in template.splitlines():
        words = line.split()
        if line[:1] not in ("", " ", "\t", "#"):
            section = words[0]
            if section == "backend" and source is not None:
                out.extend([line, f"    source {source}"])
                continue
        elif section == "global" and words[:2] == ["stats", "socket"]:
            line = f"    stats socket {stats_socket} mode 600 level admin"
            replaced.add("stats socket")
        elif section == "frontend" and words[:1] == ["bind"]:
            line = f"    bind {bind}"
            replaced.add("bind")
        elif section == "backend" and words[:1] == ["server"]:
            if "server" in replaced:
                continue  # the template's other examples
            out.extend(
                f"    server {i.name} {i.host}:{i.port} check port {i.http_port}" for i in instances
            )
            replaced.add("server")
            continue
        out.append(line)
    missing = {"stats socket", "bind", "server"} - replaced
    if missing:
        raise ValueError(f"the template has no {', '.join(sorted(missing))} line to replace")
    return "\n".join(out) + "\n"


def instance_env(instance: Instance, temp_dir: Path, *, proxy: str = "127.0.0.1") -> dict[str, str]:
    """The environment overrides that make one instance of the cluster (ffserve.config)."""
    return {
        "FFSERVE_SERVER_HOST": instance.host,
        "FFSERVE_SERVER_PORT": str(instance.port),
        "FFSERVE_SERVER_HTTP_PORT": str(instance.http_port),
        "FFSERVE_SERVER_TRUSTED_PROXIES": proxy,
        "FFSERVE_SERVER_PROXY_PROTOCOL": "true",
        "FFSERVE_STORAGE_TEMP_DIR": str(temp_dir),
    }


# Straight to the instance, whatever http_proxy says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_haproxy() -> str | None:
    """The haproxy executable: on PATH, or in the sbin directories a user's PATH may lack."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def is_ready(instance: Instance) -> bool:
    try:
        with _DIRECT.open(instance.ready_url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop the cluster."""


@attrs.define
class Signals:
    """The first Ctrl-C (or SIGTERM) stops the cluster, by raising Stop in the main
    thread; any later one passes SIGTERM on to the instances, which then stop at once
    (ffserve's second signal), wherever the stop has got to."""

    instances: list[subprocess.Popen[bytes]] = attrs.Factory(list)
    stopping: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.received)
        signal.signal(signal.SIGTERM, self.received)

    def received(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise Stop
        print("cluster: stopping the instances at once", file=sys.stderr, flush=True)
        _signal_all(self.instances, signal.SIGTERM)


def _relay(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours, each line prefixed with its name."""
    with stream:
        for line in stream:
            sys.stdout.write(f"{name:>9} | {line.decode(errors='replace')}")
            sys.stdout.flush()


_RELAYS: list[threading.Thread] = []


def _start(name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args,
        env=dict(env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the terminal's Ctrl-C is ours to order, not theirs
    )
    assert process.stdout is not None
    relay = threading.Thread(target=_relay, args=(name, process.stdout), daemon=True)
    relay.start()
    _RELAYS.append(relay)
    return process


def _signal_all(processes: Iterable[subprocess.Popen[bytes]], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


def _wait_all(processes: Sequence[subprocess.Popen[bytes]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def stop(
    instances: Sequence[subprocess.Popen[bytes]],
    haproxy: subprocess.Popen[bytes] | None,
    drain_s: float,
) -> None:
    """Drain the instances and let HAProxy's connections end; kill what outlives the bound."""
    _signal_all(instances, signal.SIGTERM)
    _signal_all([haproxy] if haproxy else [], signal.SIGUSR1)
    _wait_all(instances, drain_s)
    everything = [*instances, *([haproxy] if haproxy else [])]
    if not _wait_all(everything, 5.0):  # HAProxy: its tunnels ended with the instances
        _signal_all(everything, signal.SIGTERM)
        if not _wait_all(everything, 5.0):
            _signal_all(everything, signal.SIGKILL)
            _wait_all(everything, 5.0)


def run(n: int, port: int, *, instance_port: int, haproxy: str, config: Path) -> int:
    instances = local_instances(n, instance_port)
    drain_s = Config.load(config).server.drain_timeout_s + DRAIN_MARGIN_S
    work = Path(tempfile.mkdtemp(prefix="ffserve-cluster-"))
    signals = Signals()
    started = signals.instances
    balancer: subprocess.Popen[bytes] | None = None
    signals.install()
    try:
        cfg = work / "haproxy.cfg"
        cfg.write_text(
            render(
                TEMPLATE.read_text(),
                bind=f"127.0.0.1:{port}",
                instances=instances,
                stats_socket=work / "haproxy.sock",
            )
        )
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        for instance in instances:
            temp = work / instance.name
            temp.mkdir()
            env = {**os.environ, **instance_env(instance, temp), "PYTHONPATH": path}
            args = [sys.executable, "-m", "ffserve", "serve", "--config", str(config)]
            started.append(_start(instance.name, args, env))
        deadline = time.monotonic() + READY_WITHIN_S
        waiting = list(zip(instances, started, strict=True))
        while waiting:
            if any(process.poll() is not None for _, process in waiting):
                print("cluster: an instance exited before it was ready", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"cluster: not ready within {READY_WITHIN_S:g} s", file=sys.stderr)
                return 1
            waiting = [(i, p) for i, p in waiting if not is_ready(i)]
            time.sleep(0.2)
        balancer = _start("haproxy", [haproxy, "-db", "-f", str(cfg)], os.environ)
        names = ", ".join(f"{i.name} {i.host}:{i.port}" for i in instances)
        print(
            f"cluster: ws://127.0.0.1:{port}/ -> {names}; "
            f"HAProxy stats: echo 'show stat' | socat - {work / 'haproxy.sock'}; "
            "Ctrl-C stops",
            flush=True,
        )
        code = balancer.wait()
        print(f"cluster: HAProxy exited ({code})", file=sys.stderr)
        return 1
    except Stop:
        print("cluster: stopping (instances drain; Ctrl-C again: at once)", flush=True)
        return 0
    finally:
        signals.stopping = True  # however we got here, a signal now only hurries the stop
        try:
            stop(started, balancer, drain_s)
            for relay in _RELAYS:  # the children's last lines (they have exited)
                relay.join(timeout=1.0)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.cluster", description=__doc__)
    parser.add_argument("instances", type=int, help=f"how many ffserve (1-{MAX_INSTANCES})")
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port (default 8080)")
    parser.add_argument(
        "--instance-port",
        type=int,
        default=8080,
        help="each instance's WebSocket port on its own address; HTTP the next (default 8080)",
    )
    parser.add_argument("--haproxy", default=find_haproxy(), help="the haproxy executable")
    parser.add_argument("--config", type=Path, default=REPO / "config.toml")
    args = parser.parse_args(argv)
    if not 1 <= args.instances <= MAX_INSTANCES:
        parser.error(f"instances must be 1-{MAX_INSTANCES}")
    if args.haproxy is None or shutil.which(args.haproxy) is None:
        parser.error("haproxy not found (Debian: apt-get install haproxy; or --haproxy PATH)")
    return run(
        args.instances,
        args.port,
        instance_port=args.instance_port,
        haproxy=args.haproxy,
        config=args.config,
    )


if __name__ == "__main__":
    sys.exit(main())
