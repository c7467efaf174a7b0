"""The HTTP endpoint: `/health`, `/ready`, `/metrics`, and the web console, by hypercorn.

The console (`/`, `/console/...`, see ffserve.service.console) is there when `[server]
console` is on; off, `/` is 404 like any unknown path.

With `[auth] mode = "jwt"`, `/metrics` and the details of `/health` need a valid token
(`Authorization: Bearer`, checked as on the WebSocket upgrade): without one `/health`
says only `{"status": ...}` (what a load balancer needs) and `/metrics` is 401; a token
that is given but bad is 401 on both.

`/ready` is for load balancers and orchestrators, always open, token or not, so it says
only `{"ready": true}` (200) or `{"ready": false}` (503): why not is in the detailed
`/health` (`not_ready`). It is 503 from the moment a drain begins (the listener closes at
the same time), while the admission queue is full, and while the temp disk is down to its
reserve; the last two with `Retry-After` (`jobs.retry_after_s`), as they pass by themselves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ffserve import __version__
from ffserve.jobs.services import Services
from ffserve.metrics import CONTENT_TYPE
from ffserve.service.console import Console
from ffserve.session.auth import Authenticator, Unauthorized

FEATURES = ("multi_upload", "multi_output", "probe", "chunked", "output_url", "progress_detail")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def health(services: Services, ffmpeg_version: str) -> dict[str, Any]:
    pool = services.pool
    return {
        "status": "draining" if services.admission.draining else "ok",
        "version": __version__,
        "ffmpeg_version": ffmpeg_version,
        "running": pool.running,
        "queued": pool.queued,
        "capacity": pool.capacity,
        "queue_limit": pool.queue_limit,
        "connections": services.metrics.connections,
        # Why /ready says 503, or None.
        "not_ready": not_ready(services),
        # Protocol extensions this server speaks (docs/protocol.md section 8).
        "features": list(FEATURES),
        # Which protections FFmpeg and ffprobe run under (docs/sandbox.md).
        "sandbox": services.confinement.describe(),
    }


def not_ready(services: Services) -> str | None:
    """Why this instance should get no new clients now, or None."""
    admission = services.admission
    if admission.draining:
        return "draining"
    if services.pool.full:
        return "queue full"
    if admission.out_of_disk:
        return "disk reserve"
    return None


def ready(services: Services) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """/ready's status, body and headers: nothing an unauthenticated caller should not know."""
    reason = not_ready(services)
    if reason is None:
        return 200, b'{"ready": true}', []
    # A drain ends with the process: no time to wait for. A full queue or disk empties.
    wait = [] if reason == "draining" else [_retry_after(services.config.jobs.retry_after_s)]
    return 503, b'{"ready": false}', wait


def _retry_after(seconds: float) -> tuple[bytes, bytes]:
    """RFC 9110 10.2.3: delay-seconds is a whole number."""
    return b"retry-after", str(math.ceil(seconds)).encode()


def make_app(
    services: Services,
    authenticator: Authenticator,
    ffmpeg_version: str,
    console: Console | None = None,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    def allowed(scope: Scope) -> Unauthorized | None:
        """None if the request may see everything, else why not (audited when a token
        was given: a missing one is every load balancer's probe)."""
        try:
            authenticator.verify_headers(scope["headers"])
        except Unauthorized as exc:
            if exc.token_given or scope["path"] == "/metrics":
                client = scope.get("client")
                services.audit.record(
                    "http_refused",
                    client=f"{client[0]}:{client[1]}" if client else "-",
                    subject=exc.subject,
                    reason=exc.reason,
                )
            return exc
        return None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        refused = allowed(scope) if path in ("/health", "/metrics") else None
        extra: list[tuple[bytes, bytes]] = []
        page = (
            console.respond(path, _header(scope, b"host"), scope["scheme"] == "https")
            if console is not None
            else None
        )
        if method not in ("GET", "HEAD"):
            status, body, kind = 405, b'{"error":"method not allowed"}', "application/json"
        elif refused is not None and (refused.token_given or path == "/metrics"):
            status, kind = 401, "application/json"
            body = json.dumps({"error": "unauthorized", "reason": refused.reason}).encode()
            extra = [(b"www-authenticate", refused.challenge)]
        elif page is not None:
            status, body, kind, extra = page.status, page.body, page.kind, page.headers
        elif path == "/health":
            report = health(services, ffmpeg_version)
            if refused is not None:
                report = {"status": report["status"]}
            status, body, kind = 200, json.dumps(report).encode(), "application/json"
        elif path == "/ready":
            status, body, extra = ready(services)
            kind = "application/json"
        elif path == "/metrics":
            status, body, kind = 200, services.metrics.render(), CONTENT_TYPE
        else:
            status, body, kind = 404, b'{"error":"not found"}', "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *extra,
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def serve_http(
    services: Services,
    authenticator: Authenticator,
    ffmpeg_version: str,
    host: str,
    port: int,
    console: Console | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP endpoint until cancelled; `started` with the bound port."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    app = make_app(services, authenticator, ffmpeg_version, console)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, app, config, mode="asgi")  # type: ignore[arg-type]
        )
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
