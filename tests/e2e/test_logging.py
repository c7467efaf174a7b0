"""No URL secret in any log record: userinfo and presigned signatures stay out of the logs,
ffserve's and httpx's, with the service's own logging setup (`configure_logging`).

Every server is on loopback; the URLs carry a password and an X-Amz-Signature.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ffserve.service.cli import configure_logging
from tests.conftest import Media, StartServer
from tests.e2e.test_streaming import start_put_server
from tests.helpers import connect
from tests.transfer.test_download import ok, start_local, status

PASSWORD = "hunter2pw"
SIGNATURE = "s3cr3tSignature"
SECRETS = (PASSWORD, SIGNATURE)


def secret_url(port: int, path: str) -> str:
    return f"http://alice:{PASSWORD}@127.0.0.1:{port}{path}?X-Amz-Signature={SIGNATURE}&e=1"


@pytest.fixture
def service_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG (the most an operator can ask for), then the service's setup;
    the logger levels it changes are put back afterwards."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    yield caplog
    root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_no_url_secret_reaches_a_log_record(
    start_server: StartServer,
    nursery: trio.Nursery,
    media: Media,
    tmp_path: Path,
    service_logging: pytest.LogCaptureFixture,
) -> None:
    """A URL-input job whose output goes to a URL, and a URL input that fails: each
    request is logged (redacted), and no record holds the password or the signature."""
    source = await start_local(nursery)
    source.routes["/clip.mp4"] = ok(media.clip.read_bytes(), content_type="video/mp4")
    source.routes["/gone.mp4"] = status(404)
    put = await start_put_server(nursery, tmp_path / "put.png")
    security = {"allow_private_urls": True, "url_ports": [source.port, put.port]}
    server = await start_server(security=security)
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.send(
                {
                    "type": "start_job",
                    "job_id": "in-out",
                    "operation": "thumbnail",
                    "input": {"source": "url", "url": secret_url(source.port, "/clip.mp4")},
                    "options": {"timestamp": 1.0, "width": 320},
                    "output": {"url": secret_url(put.port, "/bucket/thumb.png")},
                }
            )
            done = await client.collect("in-out")
            url = secret_url(source.port, "/gone.mp4")
            await client.start("gone", "thumbnail", {"timestamp": 1.0}, url=url)
            failed = await client.collect("gone")
    assert done.final["type"] == "completed", done.final
    assert done.final["output_metadata"]["url"] == f"http://127.0.0.1:{put.port}/bucket/thumb.png"
    assert failed.final["code"] == "URL_FETCH_FAILED", failed.final
    # The secrets did travel where they belong.
    ((_method, target, headers),) = put.requests
    assert SIGNATURE in target and headers["authorization"].startswith("Basic ")
    assert [s.target.split("?")[0] for s in source.seen] == ["/clip.mp4", "/gone.mp4"]

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = [formatter.format(record) for record in service_logging.records]
    leaks = [line for line in logged if any(secret in line for secret in SECRETS)]
    assert leaks == []
    # Each request was logged, without its secrets.
    for line in (
        f"GET http://127.0.0.1:{source.port}/clip.mp4 (at 127.0.0.1): HTTP 200",
        f"GET http://127.0.0.1:{source.port}/gone.mp4 (at 127.0.0.1): HTTP 404",
        f"PUT http://127.0.0.1:{put.port}/bucket/thumb.png (at 127.0.0.1): HTTP 200",
    ):
        assert any(line in text for text in logged), (line, logged)
