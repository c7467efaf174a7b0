"""The operators' HTTP endpoint: `/health`, `/ready`, `/metrics`, served by hypercorn."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ffserve import __version__
from ffserve.jobs.services import Services

FEATURES = ("multi_upload", "multi_output", "probe", "chunked", "output_url")
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
        # Protocol extensions this server speaks (docs/protocol.md section 8).
        "features": list(FEATURES),
        # Which protections FFmpeg and ffprobe run under (docs/sandbox.md).
        "sandbox": services.confinement.describe(),
    }


def ready(services: Services) -> tuple[int, dict[str, Any]]:
    if services.admission.draining:
        return 503, {"ready": False, "reason": "draining"}
    if services.pool.full:
        return 503, {"ready": False, "reason": "queue full"}
    return 200, {"ready": True}


def make_app(
    services: Services, ffmpeg_version: str
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
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
        if method not in ("GET", "HEAD"):
            status, body, kind = 405, b'{"error":"method not allowed"}', "application/json"
        elif path == "/health":
            status, body, kind = (
                200,
                json.dumps(health(services, ffmpeg_version)).encode(),
                "application/json",
            )
        elif path == "/ready":
            code, payload = ready(services)
            status, body, kind = code, json.dumps(payload).encode(), "application/json"
        elif path == "/metrics":
            pool = services.pool
            text = services.metrics.render(
                {
                    "jobs_running": pool.running,
                    "jobs_queued": pool.queued,
                    "worker_capacity": pool.capacity,
                }
            )
            status, body, kind = 200, text.encode(), "text/plain; version=0.0.4"
        else:
            status, body, kind = 404, b'{"error":"not found"}', "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app


async def serve_http(
    services: Services,
    ffmpeg_version: str,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the health endpoint until cancelled; `started` with the bound port."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, make_app(services, ffmpeg_version), config, mode="asgi")  # type: ignore[arg-type]
        )
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
