"""deploy/haproxy.cfg and `just cluster`'s generator (scripts/cluster.py): the config for N
instances, HAProxy's own verdict on it, and a real HAProxy in front of a real server:
the client's address arrives through PROXY v2, only WebSocket upgrades pass, a job runs.
"""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from bench.server import free_port
from ffserve.service.server import Endpoints
from scripts.cluster import (
    TEMPLATE,
    Instance,
    find_haproxy,
    instance_env,
    local_instances,
    render,
)
from tests.conftest import Media, StartServer
from tests.e2e.test_abuse import audit_lines, open_from, upgrade
from tests.helpers import connect, probe

HAPROXY = find_haproxy()
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


def rendered(n: int, tmp_path: Path) -> str:
    return render(
        TEMPLATE.read_text(),
        bind="127.0.0.1:9080",
        instances=local_instances(n),
        stats_socket=tmp_path / "haproxy.sock",
    )


def section(config: str, header: str) -> list[str]:
    """The stripped, non-comment lines of one section (`backend ffserve`)."""
    lines = config.splitlines()
    start = lines.index(header) + 1
    body: list[str] = []
    for line in lines[start:]:
        if line[:1] not in ("", " ", "\t", "#"):
            break
        if line.strip() and not line.strip().startswith("#"):
            body.append(line.strip())
    return body


@pytest.mark.parametrize("n", [1, 2, 5])
def test_the_config_has_one_server_per_instance_checked_on_its_http_port(
    n: int, tmp_path: Path
) -> None:
    config = rendered(n, tmp_path)
    backend = section(config, "backend ffserve")
    servers = [line for line in backend if line.startswith("server ")]
    assert servers == [
        f"server ffserve{i} 127.0.0.{10 + i}:8080 check port 8081" for i in range(1, n + 1)
    ]
    assert "balance leastconn" in backend
    assert "option httpchk GET /ready" in backend
    (default,) = [line for line in backend if line.startswith("default-server ")]
    assert "send-proxy-v2" in default.split() and "check" in default.split()
    assert "check-send-proxy" not in default  # the HTTP port reads no PROXY header
    assert section(config, "frontend ffserve")[0] == "bind 127.0.0.1:9080"
    assert f"stats socket {tmp_path / 'haproxy.sock'} mode 600 level admin" in config


def test_websocket_timeouts_outlast_ffserves_own() -> None:
    defaults = section(TEMPLATE.read_text(), "defaults")
    timeouts = {
        " ".join(line.split()[:2]): line.split()[2]
        for line in defaults
        if line.startswith("timeout ")
    }
    assert {"timeout tunnel", "timeout client-fin", "timeout connect"} <= set(timeouts)
    seconds = {"s": 1, "m": 60, "h": 3600}
    tunnel = int(timeouts["timeout tunnel"][:-1]) * seconds[timeouts["timeout tunnel"][-1]]
    assert tunnel > 300  # config.toml idle_timeout_s: ffserve closes idle ones itself


def test_haproxy_may_be_told_its_source_address(tmp_path: Path) -> None:
    config = render(
        TEMPLATE.read_text(),
        bind="127.0.0.1:9080",
        instances=local_instances(1),
        stats_socket=tmp_path / "s",
        source="127.0.0.2",
    )
    assert section(config, "backend ffserve")[0] == "source 127.0.0.2"
    assert "source" not in rendered(1, tmp_path)


def test_the_template_must_keep_the_lines_the_generator_replaces() -> None:
    broken = TEMPLATE.read_text().replace("    bind :8080\n", "")
    with pytest.raises(ValueError, match="bind"):
        render(broken, bind="x", instances=local_instances(1), stats_socket=Path("s"))
    with pytest.raises(ValueError, match="no instance"):
        render(TEMPLATE.read_text(), bind="x", instances=[], stats_socket=Path("s"))
    with pytest.raises(ValueError, match="1-50"):
        local_instances(0)


def test_each_instance_trusts_only_the_balancer_and_reads_proxy_v2(tmp_path: Path) -> None:
    env = instance_env(local_instances(2)[1], tmp_path)
    assert env == {
        "FFSERVE_SERVER_HOST": "127.0.0.12",
        "FFSERVE_SERVER_PORT": "8080",
        "FFSERVE_SERVER_HTTP_PORT": "8081",
        "FFSERVE_SERVER_TRUSTED_PROXIES": "127.0.0.1",
        "FFSERVE_SERVER_PROXY_PROTOCOL": "true",
        "FFSERVE_STORAGE_TEMP_DIR": str(tmp_path),
    }


@needs_haproxy
@pytest.mark.parametrize("n", [0, 3])
def test_haproxy_accepts_the_template_and_what_is_made_of_it(n: int, tmp_path: Path) -> None:
    assert HAPROXY is not None
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered(n, tmp_path) if n else TEMPLATE.read_text())
    done = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout + done.stderr


@needs_haproxy
async def test_through_haproxy_the_server_sees_the_client_and_only_websocket_passes(
    start_server: StartServer,
    media: Media,
    tmp_path: Path,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """max_connections_per_ip = 1 counts each client, not HAProxy: 127.0.0.5's second
    connection is refused while 127.0.0.6's first is taken. Without `send-proxy-v2` every
    connection would be refused (a trusted peer must send the header)."""
    assert HAPROXY is not None
    server = await start_server(
        server={
            "trusted_proxies": ["127.0.0.1"],
            "proxy_protocol": True,
            "max_connections_per_ip": 1,
        }
    )
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    instance = Instance("ffserve1", server.host, server.port, server.http_port)
    config.write_text(
        render(
            TEMPLATE.read_text(),
            bind=f"127.0.0.1:{port}",
            instances=[instance],
            stats_socket=tmp_path / "haproxy.sock",
        )
    )
    run_haproxy = partial(trio.run_process, [HAPROXY, "-db", "-q", "-f", str(config)])
    await nursery.start(partial(run_haproxy, stdout=subprocess.DEVNULL))
    balancer = Endpoints("127.0.0.1", port, 0)
    with trio.fail_after(30):
        while True:  # until HAProxy listens and has the server up
            try:
                status, _ = await upgrade(balancer, "127.0.0.5")
            except ConnectionRefusedError:
                status = 0
            if status == 101:
                break
            await trio.sleep(0.2)
        assert (await upgrade(balancer, "127.0.0.5"))[0] == 503
        assert (await upgrade(balancer, "127.0.0.6"))[0] == 101
        for path in (b"/ready", b"/health", b"/metrics"):
            raw = await open_from(
                balancer, "127.0.0.7", b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path
            )
            assert (await raw.stream.receive_some(4096)).startswith(b"HTTP/1.1 400")
        async with connect(f"ws://127.0.0.1:{port}/") as client:
            result = await client.run("speed", media.clip, {"speed_factor": 2})
        assert result.final["type"] == "completed"
        output = result.save(tmp_path)
        assert float(probe(output)["format"]["duration"]) == pytest.approx(1.0, abs=0.1)
    (refused,) = audit_lines(caplog, "handshake_refused")
    assert "client=127.0.0.5" in refused
