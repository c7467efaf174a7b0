from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ffserve.config import Config, ConfigError
from ffserve.service.cli import load_config, parse_args
from ffserve.service.server import CLOSE_GRACE_S, stop_grace

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_matches_the_defaults() -> None:
    assert Config.load(ROOT / "config.toml", env={}) == Config()


def test_required_keys_and_defaults() -> None:
    config = Config()
    assert (config.server.port, config.server.http_port) == (8080, 8081)
    assert config.security.allow_private_urls is False
    for section, key in [
        ("jobs", "max_concurrent"),
        ("jobs", "queue_limit"),
        ("jobs", "timeout_s"),
        ("limits", "max_upload_mb"),
        ("ffmpeg", "ffmpeg"),
        ("ffmpeg", "ffprobe"),
        ("storage", "temp_dir"),
        ("server", "host"),
    ]:
        assert hasattr(getattr(config, section), key)


def test_env_overrides_every_kind_of_value(tmp_path: Path) -> None:
    env = {
        "FFSERVE_SERVER_PORT": "9000",
        "FFSERVE_JOBS_TIMEOUT_S": "2.5",
        "FFSERVE_SECURITY_ALLOW_PRIVATE_URLS": "true",
        "FFSERVE_FFMPEG_FFMPEG": "/opt/ff",
        "OTHER": "ignored",
    }
    config = Config.load(ROOT / "config.toml", env=env)
    assert config.server.port == 9000
    assert config.jobs.timeout_s == 2.5
    assert config.security.allow_private_urls is True
    assert config.ffmpeg.ffmpeg == "/opt/ff"


@pytest.mark.parametrize(
    ("toml", "raw", "ports"),
    [
        ("", None, (80, 443)),
        ("[security]\nurl_ports = [8443]\n", None, (8443,)),
        ("[security]\nurl_ports = []\n", None, ()),
        ("[security]\nurl_ports = [8443]\n", "[80, 9000]", (80, 9000)),
        ("", "443", (443,)),
        ("", " 80, 8080 ,", (80, 8080)),
        ("", "[]", ()),
        ("", "", ()),
    ],
)
def test_url_ports_from_the_file_or_the_environment(
    tmp_path: Path, toml: str, raw: str | None, ports: tuple[int, ...]
) -> None:
    """A list-valued key takes a JSON array or a comma-separated list in its variable."""
    path = tmp_path / "config.toml"
    path.write_text(toml)
    env = {} if raw is None else {"FFSERVE_SECURITY_URL_PORTS": raw}
    assert Config.load(path, env=env).security.url_ports == ports


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("[server]\nprot = 1\n", {}, "server.prot"),
        ("[server]\nport = 'x'\n", {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[jobs]\nmax_concurrent = 0\n", {}, "jobs.max_concurrent"),
        ("[nope]\na = 1\n", {}, "nope"),
        ("[server\n", {}, "invalid TOML"),
        ("", {"FFSERVE_SERVER_PROT": "1"}, "FFSERVE_SERVER_PROT"),
        ("", {"FFSERVE_SERVER_PORT": "eighty"}, "FFSERVE_SERVER_PORT"),
        (
            "",
            {"FFSERVE_SECURITY_ALLOW_PRIVATE_URLS": "maybe"},
            "FFSERVE_SECURITY_ALLOW_PRIVATE_URLS",
        ),
        ("[security]\nurl_ports = [0]\n", {}, "security.url_ports"),
        ("[security]\nurl_ports = 80\n", {}, "security.url_ports"),
        ("[security]\nurl_ports = ['80']\n", {}, "security.url_ports"),
        ("", {"FFSERVE_SECURITY_URL_PORTS": "80,http"}, "FFSERVE_SECURITY_URL_PORTS"),
        ("", {"FFSERVE_SECURITY_URL_PORTS": "[80,"}, "FFSERVE_SECURITY_URL_PORTS"),
        ("", {"FFSERVE_SECURITY_URL_PORTS": "[70000]"}, "security.url_ports"),
        ("", {"FFSERVE_SECURITY_URL_PORTS": '["80"]'}, "security.url_ports"),
        ("[auth]\nmode = 'oauth'\n", {}, "auth.mode"),
        ("", {"FFSERVE_AUTH_AUDIENCE": " "}, "auth.audience"),
        ("", {"FFSERVE_AUTH_LEEWAY_S": "-1"}, "auth.leeway_s"),
        ("", {"FFSERVE_AUTH_TOKEN": "x"}, "FFSERVE_AUTH_TOKEN"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], needle: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Config.load(path, env=env)
    assert needle in str(info.value)


def test_every_auth_key_has_an_env_override() -> None:
    env = {
        "FFSERVE_AUTH_MODE": "jwt",
        "FFSERVE_AUTH_SECRET_FILE": "/run/secrets/hs256",
        "FFSERVE_AUTH_PUBLIC_KEY_FILE": "/etc/ffserve/jwks.json",
        "FFSERVE_AUTH_AUDIENCE": "media",
        "FFSERVE_AUTH_LEEWAY_S": "5",
    }
    auth = Config.load(ROOT / "config.toml", env=env).auth
    assert (auth.mode, auth.secret_file, auth.public_key_file) == (
        "jwt",
        "/run/secrets/hs256",
        "/etc/ffserve/jwks.json",
    )
    assert (auth.audience, auth.leeway_s) == ("media", 5.0)
    assert Config().auth.mode == "off"  # local development needs no token


def test_cli_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("[server]\nport = 7000\nhttp_port = 7001\n")
    assert load_config(parse_args(["serve"])).server.port == 7000
    config = load_config(
        parse_args(["serve", "--port", "9100", "--host", "::1", "--http-port", "9101"])
    )
    assert (config.server.host, config.server.port, config.server.http_port) == ("::1", 9100, 9101)


def test_a_required_sandbox_that_cannot_run_stops_the_start_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FFSERVE_SANDBOX_MODE": "required",
        "FFSERVE_SANDBOX_BWRAP": "/nonexistent/bwrap",
        "FFSERVE_SERVER_PORT": "0",
        "FFSERVE_SERVER_HTTP_PORT": "0",
        "FFSERVE_STORAGE_TEMP_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ffserve", "serve", "--config", str(ROOT / "config.toml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ffserve: sandbox.mode is \"required\", but bubblewrap ('/nonexistent/bwrap') "
        "is not installed"
    )
    assert "Traceback" not in done.stderr


def test_front_door_lists_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FFSERVE_SECURITY_ALLOWED_ORIGINS": "https://app.example.com, https://b.example.com",
        "FFSERVE_SERVER_TRUSTED_PROXIES": '["10.0.0.0/8", "192.0.2.1"]',
        "FFSERVE_SERVER_PROXY_PROTOCOL": "true",
    }
    config = Config.load(ROOT / "config.toml", env=env)
    assert config.security.allowed_origins == ("https://app.example.com", "https://b.example.com")
    assert config.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert config.server.proxy_protocol is True
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        Config.load(None, env={"FFSERVE_SERVER_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"})


def test_the_container_stop_timeout_outlasts_the_longest_drain() -> None:
    """`podman stop` SIGKILLs after its -t: the timeout the Containerfile documents (its
    comment and its label) must leave the default drain, the stopping of jobs it cuts and
    the closing of connections time to run, with room to spare."""
    containerfile = (ROOT / "Containerfile").read_text()
    (label,) = re.findall(r'io\.ffserve\.stop-timeout="(\d+)"', containerfile)
    assert f"podman stop -t {label}" in containerfile
    assert "STOPSIGNAL SIGTERM" in containerfile
    config = Config()
    longest = config.server.drain_timeout_s + stop_grace(config) + CLOSE_GRACE_S
    assert int(label) >= longest + 5, (label, longest)
    readme = (ROOT / "README.md").read_text()
    assert f"podman stop -t {label}" in readme
