"""Authentication end to end: a server with `[auth] mode = "jwt"` on real loopback sockets.

Tokens come from keys made in the test (an HS256 secret, a JWKS of an ES256 and an EdDSA
key); the refusals are read off the wire as HTTP, the accepted connections run real jobs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected

from ffserve.service.server import Endpoints
from tests.conftest import Media, StartServer
from tests.e2e.test_logging import service_logging  # noqa: F401 (a fixture)
from tests.helpers import binary_frame, connect, job_dirs, probe, streams
from tests.session.keys import Keys, claims
from tests.wire.test_websocket import masked, response_to

ROOT = Path(__file__).resolve().parents[2]
CHALLENGE = b'Bearer realm="ffserve"'
INVALID = b'Bearer realm="ffserve", error="invalid_token"'


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys.make(tmp_path)


def auth_section(keys: Keys) -> dict[str, Any]:
    return {
        "mode": "jwt",
        "secret_file": str(keys.secret_file),
        "public_key_file": str(keys.jwks_file),
    }


@pytest.fixture
async def server(start_server: StartServer, keys: Keys) -> Endpoints:
    return await start_server(auth=auth_section(keys))


def hs256(keys: Keys, sub: str = "app-1", **changes: Any) -> str:
    return jwt.encode(claims(sub, **changes), keys.secret, algorithm="HS256")


def es256(keys: Keys, sub: str = "browser-1") -> str:
    return jwt.encode(claims(sub), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})


def upgrade(port: int, target: str = "/", headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_response(response: bytes) -> tuple[str, dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    headers = dict(field.split(b": ", 1) for field in fields)
    return status.decode(), {k.lower(): v for k, v in headers.items()}, body


async def metrics(server: Endpoints, token: str) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"http://127.0.0.1:{server.http_port}/metrics",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200, answer.text
    return answer.text


async def test_no_token_gets_401_and_no_job_runs(
    server: Endpoints,
    keys: Keys,
    workdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that sends its job and upload right behind the upgrade request gets the
    401 and nothing else: no 101, no ack, no job started, no job directory."""
    start = {
        "type": "start_job",
        "job_id": "j1",
        "operation": "thumbnail",
        "input": {"source": "upload"},
        "options": {"timestamp": 1.0},
    }
    request = upgrade(server.port)
    # Small enough to arrive with the request: bytes left unread at the close would
    # make the kernel reset the connection, and the client might lose the answer.
    frames = masked(0x1, json.dumps(start).encode()) + masked(0x2, binary_frame("j1", "a", b"x"))
    with caplog.at_level(logging.WARNING, logger="ffserve.audit"), trio.fail_after(20):
        response = await response_to(server, request + frames)
        status, headers, body = split_response(response)
        assert status == "HTTP/1.1 401 Unauthorized", response[:200]
        assert headers[b"www-authenticate"] == CHALLENGE
        assert len(body) == int(headers[b"content-length"])  # nothing after the refusal
        assert body == b"unauthorized: no token"
        text = await metrics(server, hs256(keys))
    assert "ffserve_handshakes_unauthorized_total 1" in text
    assert "jobs_started" not in text
    assert job_dirs(workdir) == []
    (line,) = [m for m in caplog.messages if "handshake_refused" in m]
    assert "client=127.0.0.1 " in line and "reason='no token'" in line


@pytest.mark.parametrize(
    "bad",
    [
        "not.a.token",
        "wrong-secret",
        "expired",
        "wrong-audience",
    ],
)
async def test_a_bad_token_in_the_header_gets_401_invalid_token(
    server: Endpoints, keys: Keys, bad: str
) -> None:
    token = {
        "wrong-secret": jwt.encode(claims(), b"s" * 40, algorithm="HS256"),
        "expired": hs256(keys, exp=1_000_000, iat=999_000),
        "wrong-audience": hs256(keys, aud="someone-else"),
    }.get(bad, bad)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with connect(server.url, token=token):
            pass
    assert info.value.status_code == 401
    assert (b"www-authenticate", INVALID) in info.value.headers


async def test_a_valid_token_in_the_header_runs_a_real_job(
    server: Endpoints, keys: Keys, media: Media, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with connect(server.url, token=hs256(keys)) as client:
            result = await client.run("thumbnail", media.clip, {"timestamp": 1.0, "width": 320})
    assert result.final["type"] == "completed", result.final
    (video,) = streams(probe(result.save(tmp_path)), "video")
    assert (video["width"], video["height"]) == (320, 180)


async def test_a_valid_token_as_access_token_query_parameter_works(
    server: Endpoints, keys: Keys, media: Media, tmp_path: Path
) -> None:
    """The browser way (RFC 6750 2.3), here with the JWKS's ES256 key."""
    with trio.fail_after(30):
        async with connect(f"{server.url}?access_token={es256(keys)}") as client:
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}
            result = await client.run("thumbnail", media.clip, {"timestamp": 0.5})
    assert result.final["type"] == "completed", result.final
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with connect(f"{server.url}?access_token={es256(keys)}x"):
            pass
    assert info.value.status_code == 401


async def test_health_shows_details_only_with_a_token_and_metrics_needs_one(
    server: Endpoints, keys: Keys
) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    good = {"Authorization": f"Bearer {hs256(keys, 'ops')}"}
    bad = {"Authorization": f"Bearer {hs256(keys, aud='x')}"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base) as http:
            bare = await http.get("/health")
            detailed = await http.get("/health", headers=good)
            refused_health = await http.get("/health", headers=bad)
            no_metrics = await http.get("/metrics")
            bad_metrics = await http.get("/metrics", headers=bad)
            ok_metrics = await http.get("/metrics", headers=good)
            ready = await http.get("/ready")
            ready_bad_token = await http.get("/ready", headers=bad)
    assert (bare.status_code, bare.json()) == (200, {"status": "ok"})
    assert detailed.status_code == 200
    assert detailed.json()["status"] == "ok" and "ffmpeg_version" in detailed.json()
    assert "sandbox" in detailed.json()
    assert refused_health.status_code == 401
    assert refused_health.headers["www-authenticate"] == INVALID.decode()
    assert no_metrics.status_code == 401
    assert no_metrics.headers["www-authenticate"] == CHALLENGE.decode()
    assert "ffserve_" not in no_metrics.text
    assert bad_metrics.status_code == 401
    assert ok_metrics.status_code == 200 and "ffserve_connections" in ok_metrics.text
    # /ready is for balancers, which have no token: open, and it says only the verdict.
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert (ready_bad_token.status_code, ready_bad_token.json()) == (200, {"ready": True})


async def test_with_auth_off_health_and_metrics_are_open(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            health, metrics_ = await http.get("/health"), await http.get("/metrics")
    assert health.status_code == 200 and "ffmpeg_version" in health.json()
    assert metrics_.status_code == 200


async def test_the_cli_mints_a_token_the_server_accepts(
    server: Endpoints, keys: Keys, tmp_path: Path
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(f'[auth]\nsecret_file = "{keys.secret_file}"\n')
    command = [sys.executable, "-m", "ffserve", "token", "--sub", "cli-user", "--ttl", "600"]
    command += ["--claim", "tier=2", "--claim", "team=video", "--config", str(config)]
    with trio.fail_after(30):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
        token = done.stdout.decode().strip()
        async with connect(server.url, token=token) as client:
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}
    minted = jwt.decode(token, keys.secret, algorithms=["HS256"], audience="ffserve")
    assert minted["sub"] == "cli-user" and minted["exp"] - minted["iat"] == 600
    assert (minted["tier"], minted["team"]) == (2, "video")


def test_the_cli_refuses_to_mint_without_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "ffserve", "token", "--sub", "x", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "ffserve: ffserve token needs auth.secret_file (the HS256 secret)"


def test_jwt_mode_without_a_key_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FFSERVE_AUTH_MODE": "jwt",
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
        'ffserve: auth.mode is "jwt", but neither auth.secret_file nor auth.public_key_file is set'
    )
    assert "Traceback" not in done.stderr


async def test_no_token_reaches_a_log_record(
    server: Endpoints,
    keys: Keys,
    service_logging: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    """Refused (header and query, with a subject the audit log names) and accepted
    (header and query) connections, with everything logged at DEBUG: no record holds
    any of the tokens, or their signatures."""
    refused = hs256(keys, "mallory", aud="elsewhere")
    accepted = [hs256(keys, "app-1"), es256(keys)]
    with trio.fail_after(30):
        for token in (refused, refused + "x"):
            with pytest.raises(ConnectionRejected):
                async with connect(server.url, token=token):
                    pass
            with pytest.raises(ConnectionRejected):
                async with connect(f"{server.url}?access_token={token}"):
                    pass
        for token in accepted:
            for client_of in (
                connect(server.url, token=token),
                connect(f"{server.url}?access_token={token}"),
            ):
                async with client_of as client:
                    await client.send({"type": "ping"})
                    assert await client.recv_json() == {"type": "pong"}
    # The test's own client library logs the URL it connects to, query and all: that
    # is the client's log (and why a header is the better way), not the server's.
    records = [r for r in service_logging.records if not r.name.startswith("trio-websocket")]
    assert any(r.name.startswith("ffserve") for r in records)
    audit = [r.getMessage() for r in records if "handshake_refused" in r.getMessage()]
    assert len(audit) == 4 and all("subject='mallory'" in line for line in audit)
    logged = "\n".join([r.getMessage() for r in records] + [str(r.args) for r in records])
    for token in [refused, *accepted]:
        assert token not in logged
        assert token.rsplit(".", 1)[1] not in logged


async def test_quotas_come_from_the_token_and_key_on_its_subject(
    start_server: StartServer, keys: Keys, media: Media
) -> None:
    """A token's `quota` claim sets its client's quota; the client is the subject, so two
    connections of one subject share it, and another subject is not held to it."""
    server = await start_server(auth=auth_section(keys))
    limited = hs256(keys, "tenant-a", quota={"operations": ["thumbnail"], "queued_jobs": 1})
    with trio.fail_after(60):
        async with (
            connect(server.url, token=limited) as one,
            connect(server.url, token=limited) as two,
        ):
            await one.start("trim", "trim", {"start_time": 0, "end_time": 1})
            refused = await one.recv_json()
            assert (refused["code"], refused["details"]["quota"]) == (
                "QUOTA_EXCEEDED",
                "operations",
            )
            await one.start("a", "thumbnail", {"timestamp": 0.5})  # waits for its upload
            assert (await one.recv_json())["type"] == "ack"
            await two.start("b", "thumbnail", {"timestamp": 0.5})  # same subject: one waiting
            refused = await two.recv_json()
            assert (refused["code"], refused["details"]["quota"]) == (
                "QUOTA_EXCEEDED",
                "queued_jobs",
            )
            async with connect(server.url, token=hs256(keys, "tenant-b")) as other:
                await other.start("c", "trim", {"start_time": 0, "end_time": 1})
                await other.upload("c", media.clip)
                assert (await other.collect("c")).final["type"] == "completed"
            await one.upload("a", media.clip)
            assert (await one.collect("a")).final["type"] == "completed"


async def test_the_console_is_open_and_says_a_token_is_needed(server: Endpoints) -> None:
    # The page and its schema hold nothing secret: the token is asked for by the page
    # and checked where it is used, on the WebSocket upgrade.
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            page = await http.get("/")
            schema = await http.get("/console/schema.json")
    assert page.status_code == 200
    assert schema.status_code == 200 and schema.json()["auth_required"] is True
