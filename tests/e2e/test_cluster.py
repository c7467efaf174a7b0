"""Two `python -m ffserve serve` processes behind a real HAProxy (issue 14): jobs through the
balancer, one instance drained mid-load, and no job lost, the client retrying.

HAProxy's config here is the minimum of deploy/haproxy.cfg's: leastconn, `/ready` health
checks on each instance's HTTP port, `timeout tunnel`, a refused connection redispatched,
and the client's address passed on with PROXY v2 from a source address of its own
(127.0.0.5), the one address the instances trust for it. Instances listen on 127.0.0.2
and 127.0.0.3; the balancer on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trio.lowlevel

from ffserve.client import Client, Result, open_client
from tests.client.test_retry import WatchedRetry
from tests.conftest import Media
from tests.e2e.test_shutdown import ServerProcess, run_server
from tests.helpers import connect, duration, probe, streams

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
)
BALANCER_SOURCE = "127.0.0.5"
# Checks every 200 ms, out at the first failure (deploy/haproxy.cfg: 1 s, 2), and a
# refused connection takes an instance out at once; the client's address goes in PROXY v2.
DEFAULT_SERVER = (
    "inter 200ms fall 1 rise 1 send-proxy-v2 observe layer4 error-limit 1 on-error mark-down"
)
SPEED = {"speed_factor": 2.0}
JOBS_PER_CLIENT = 3
CLIENTS = 4

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy; CI has it)"
    ),
]


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


@attrs.frozen
class Instance:
    name: str
    host: str
    server: ServerProcess

    @property
    def ws_port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1].strip("/"))

    def http(self, path: str) -> str:
        return f"http://{self.host}:{self.server.http_port}{path}"


@asynccontextmanager
async def run_instance(tmp_path: Path, name: str, host: str) -> AsyncIterator[Instance]:
    root = tmp_path / name
    root.mkdir()
    async with run_server(
        root,
        FFSERVE_SERVER_HOST=host,
        FFSERVE_SERVER_TRUSTED_PROXIES=BALANCER_SOURCE,
        FFSERVE_SERVER_PROXY_PROTOCOL="true",
        FFSERVE_SERVER_CONSOLE="false",
        FFSERVE_SERVER_DRAIN_TIMEOUT_S="90",
        FFSERVE_JOBS_MAX_CONCURRENT="1",
    ) as server:
        yield Instance(name, host, server)


def haproxy_config(port: int, stats_port: int, instances: list[Instance]) -> str:
    servers = "\n".join(
        f"    server {i.name} {i.host}:{i.ws_port} check port {i.server.http_port}"
        for i in instances
    )
    return f"""\
global
    maxconn 256

defaults
    mode http
    timeout http-request 10s
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 10m
    timeout client-fin 5s
    timeout server-fin 5s
    timeout check 1s
    retries 3
    option redispatch 1

frontend ffserve
    bind 127.0.0.1:{port}
    http-request deny deny_status 400 unless {{ hdr(upgrade) -i websocket }}
    default_backend ffserve

backend ffserve
    balance leastconn
    option httpchk GET /ready
    http-check expect status 200
    source {BALANCER_SOURCE}
    default-server {DEFAULT_SERVER}
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@attrs.frozen
class Balancer:
    url: str
    stats: str


@asynccontextmanager
async def run_haproxy(tmp_path: Path, instances: list[Instance]) -> AsyncIterator[Balancer]:
    assert HAPROXY is not None
    port, stats_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(port, stats_port, instances))
    check = await trio.run_process(
        [HAPROXY, "-c", "-q", "-f", str(config)], capture_stderr=True, check=False
    )
    assert check.returncode == 0, check.stderr.decode()
    process = await trio.lowlevel.open_process(
        [HAPROXY, "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield Balancer(f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{stats_port}/stats;csv")
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()


async def server_states(http: httpx.AsyncClient, balancer: Balancer) -> dict[str, str]:
    """HAProxy's view of each server of the backend: UP, DOWN, ..."""
    try:
        text = (await http.get(balancer.stats)).text
    except httpx.TransportError:
        return {}  # not listening yet
    header, *rows = text.splitlines()
    columns = header.lstrip("# ").split(",")
    states = {}
    for row in rows:
        record = dict(zip(columns, row.split(","), strict=False))
        if record["pxname"] == "ffserve" and record["svname"] not in ("FRONTEND", "BACKEND"):
            states[record["svname"]] = record["status"]
    return states


async def connections(http: httpx.AsyncClient, instances: list[Instance]) -> dict[str, int]:
    return {i.name: (await http.get(i.http("/health"))).json()["connections"] for i in instances}


async def landed_on(
    http: httpx.AsyncClient, instances: list[Instance], before: dict[str, int]
) -> str:
    """The instance whose WebSocket connections went up by the one just opened."""
    while True:
        now = await connections(http, instances)
        if sum(now.values()) == sum(before.values()) + 1:
            [name] = [n for n in now if now[n] > before[n]]
            return name
        await trio.sleep(0.02)


def assert_sped_up(result: Result) -> None:
    """`speed` 2x of the 2 s clip: 1 s of H.264 and AAC, as probed."""
    [output] = result.outputs
    info = probe(output.path)
    assert abs(duration(info) - 1.0) < 0.1, info["format"]
    assert [s["codec_name"] for s in streams(info, "video")] == ["h264"]
    assert [s["codec_name"] for s in streams(info, "audio")] == ["aac"]


async def test_draining_one_instance_behind_haproxy_loses_no_job(
    tmp_path: Path, media: Media
) -> None:
    """Clients spread by leastconn run jobs through HAProxy. One instance is sent SIGTERM
    while jobs run: its running jobs finish there, a job its clients start afterwards is
    refused SHUTTING_DOWN (the drain is held open by a job still uploading), and the
    client's retry, on a new connection, goes through HAProxy to the other instance and
    completes. Every job ends completed, its output probed; the drained instance exits 0
    once its last admitted job is done; both saw the clients' own address (PROXY v2)."""
    with trio.fail_after(240):
        async with (
            run_instance(tmp_path, "a", "127.0.0.2") as a,
            run_instance(tmp_path, "b", "127.0.0.3") as b,
            run_haproxy(tmp_path, [a, b]) as balancer,
            httpx.AsyncClient() as http,
            AsyncExitStack() as stack,
        ):
            instances = [a, b]
            while await server_states(http, balancer) != {"a": "UP", "b": "UP"}:  # noqa: ASYNC110
                await trio.sleep(0.05)
            # A v1 client whose job is admitted but whose upload waits: the instance it
            # landed on keeps draining (taking no new job) until it is sent.
            seen = await connections(http, instances)
            holder = await stack.enter_async_context(connect(balancer.url))
            drained_name = await landed_on(http, instances, seen)
            drained = a if drained_name == "a" else b
            await holder.start("held", "speed", SPEED)
            assert (await holder.recv_json())["type"] == "ack"
            clients: list[tuple[str, Client, WatchedRetry]] = []
            for _ in range(CLIENTS):
                seen = await connections(http, instances)
                retry = WatchedRetry(retries=8, within_s=60, first_wait_s=0.1, max_wait_s=1)
                client = await stack.enter_async_context(open_client(balancer.url, retry=retry))
                clients.append((await landed_on(http, instances, seen), client, retry))
            # leastconn: the holder's instance gets no more than its share.
            on_drained = [c for c in clients if c[0] == drained_name]
            assert 1 <= len(on_drained) < CLIENTS, [c[0] for c in clients]

            results: list[Result] = []
            first_done = [trio.Event() for _ in clients]
            draining = trio.Event()

            async def run_jobs(n: int, client: Client) -> None:
                for k in range(JOBS_PER_CLIENT):
                    if k == JOBS_PER_CLIENT - 1:
                        await draining.wait()  # the last job starts after the drain began
                    out = tmp_path / "out" / f"{n}-{k}"
                    out.mkdir(parents=True)
                    results.append(await client.run("speed", [media.clip], SPEED, out_dir=out))
                    first_done[n].set()

            async with trio.open_nursery() as load:
                for n, (_, client, _) in enumerate(clients):
                    load.start_soon(run_jobs, n, client)
                for event in first_done:
                    await event.wait()
                # Mid-load: second jobs are running or queued on both instances.
                drained.server.process.send_signal(signal.SIGTERM)
                while (await http.get(drained.http("/ready"))).status_code != 503:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                draining.set()
            assert len(results) == CLIENTS * JOBS_PER_CLIENT
            for result in results:
                assert_sped_up(result)
            for name, _, retry in clients:
                if name == drained_name:
                    # Refused at least once (SHUTTING_DOWN, or the balancer's 503 while
                    # its checks caught up), and then completed elsewhere.
                    assert retry.failed, name
                else:
                    assert retry.failed == [], name
            # HAProxy has stopped sending anyone there: /ready said 503.
            with trio.fail_after(10):
                while (await server_states(http, balancer)).get(drained_name) == "UP":  # noqa: ASYNC110
                    await trio.sleep(0.05)

            # The held job, admitted before the drain, is still run by the draining instance.
            await holder.upload("held", media.clip)
            held = await holder.collect("held")
            assert held.final["type"] == "completed", held.final
            assert abs(held.final["output_metadata"]["duration"] - 1.0) < 0.1
            with trio.fail_after(30):
                returncode = await drained.server.process.wait()
            assert returncode == 0, drained.server.log
        for instance in instances:
            log = "\n".join(instance.server.log)
            assert "Traceback" not in log, log
            # Each instance saw each client's own address, never the balancer's.
            clients_seen = re.findall(r"connection_open .*?client='([^']*)'", log)
            assert clients_seen and set(clients_seen) == {"127.0.0.1"}, log
