"""deploy/compose.yaml and deploy/haproxy-compose.cfg: the compose-spec schema (vendored by
check-jsonschema), and what the file must say for the cluster to work and stay closed.
No container is started here: that takes images and minutes (it was run by hand with
podman-compose; README, "Deploying behind a load balancer")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ffserve.config import Config
from ffserve.service.server import CLOSE_GRACE_S, stop_grace

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60}
    return float(duration[:-1]) * units[duration[-1]]


def test_compose_file_follows_the_compose_spec(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    done = subprocess.run([*args, str(COMPOSE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # ...and the check bites: a misspelled key is refused.
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period: 30s", "stop_grace: 30s"))
    assert subprocess.run([*args, str(bad)], capture_output=True).returncode != 0


def test_only_haproxy_is_published_and_the_instances_trust_only_it() -> None:
    services = compose()["services"]
    haproxy, ffserve = services["haproxy"], services["ffserve"]
    assert haproxy["ports"] == ["${FFSERVE_PORT:-8080}:8080"]
    assert "ports" not in ffserve and "expose" not in ffserve
    env = ffserve["environment"]
    assert env["FFSERVE_SERVER_TRUSTED_PROXIES"] == haproxy["networks"]["ffserve"]["ipv4_address"]
    assert env["FFSERVE_SERVER_PROXY_PROTOCOL"] == "true"
    assert ffserve["secrets"] == ["ffserve-jwt"]  # /run/secrets/ffserve-jwt, the image's
    assert ffserve["scale"] >= 2
    assert {"limits", "reservations"} <= set(ffserve["deploy"]["resources"])
    mount = haproxy["volumes"][0].split(":")
    assert (DEPLOY / mount[0]).is_file() and mount[1].endswith("/haproxy.cfg")


def test_stopping_leaves_time_for_the_drain() -> None:
    services = compose()["services"]
    config = Config.load(DEPLOY.parent / "config.toml")
    drain = config.server.drain_timeout_s
    longest = drain + stop_grace(config) + CLOSE_GRACE_S
    assert services["ffserve"]["stop_signal"] == "SIGTERM"
    assert seconds(services["ffserve"]["stop_grace_period"]) > longest
    assert services["haproxy"]["stop_signal"] == "SIGUSR1"  # soft stop: tunnels end
    assert seconds(services["haproxy"]["stop_grace_period"]) > longest


def settings(path: Path) -> list[str]:
    """A HAProxy file's directives, without comments and what tells the two files apart:
    where the instances are (server lines, DNS resolvers) and the stats socket's path."""
    kept, section = [], ""
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if line[0] not in " \t":
            section = words[0]
        if section == "resolvers" or words[0] in ("server", "server-template"):
            continue
        if words[:2] == ["stats", "socket"]:
            continue
        kept.append(" ".join(words))
    return kept


def test_the_compose_haproxy_config_is_deploy_haproxy_cfg_with_dns() -> None:
    assert settings(DEPLOY / "haproxy-compose.cfg") == settings(DEPLOY / "haproxy.cfg")
    text = (DEPLOY / "haproxy-compose.cfg").read_text()
    assert "server-template ffserve 10 ffserve:8080 check port 8081 resolvers compose" in text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_compose_config() -> None:
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY / "haproxy-compose.cfg")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
