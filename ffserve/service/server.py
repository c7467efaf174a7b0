"""The top of the nursery tree: HTTP endpoint, WebSocket listener, connections, drain.

    serve(config)
     |- serve_http            /health /ready /metrics, the console at /
     |- serve_websocket       accepts connections into `connections` (a nursery we own)
     '- connections           one `serve_connection` per client (see session/connection.py)

Shutdown: `shutdown.set()` (the CLI does it on SIGINT/SIGTERM) stops new jobs
(SHUTTING_DOWN, /ready 503), lets admitted jobs finish for up to `drain_timeout_s`,
then stops the rest, each telling its client SHUTTING_DOWN, and closes every connection
with 1001 (`drain_jobs`, `ffserve.session.drain`); what still lingers after that is
cancelled. FFmpeg children are terminated and reaped and every temp dir removed before
`serve` returns.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import Iterator

import attrs
import trio

from ffserve.config import Config, ConfigError
from ffserve.ffmpeg.sandbox import Confinement, SandboxUnavailable, open_confinement
from ffserve.ffmpeg.spawn import longest_stop
from ffserve.jobs.services import Services
from ffserve.jobs.workspace import open_workspace
from ffserve.service.console import Console
from ffserve.service.health import serve_http
from ffserve.session.auth import Authenticator
from ffserve.session.connection import serve_connection
from ffserve.session.drain import Drain
from ffserve.transfer.safehttp import open_http_client
from ffserve.wire.door import FrontDoor
from ffserve.wire.websocket import ConnectionLimits, WebSocketRequest, serve_websocket

log = logging.getLogger(__name__)
# After the drain deadline: time for stopped jobs to end FFmpeg (`stop_grace`), then for
# connections to send what they owe and close. `drain_timeout_s` plus both is the
# longest a drain takes: the Containerfile's stop timeout (`podman stop -t 30`) must
# stay above it.
CLOSE_GRACE_S = 5.0
# What a stopped job does once its FFmpeg is gone: remove its files, queue SHUTTING_DOWN.
JOB_CLEANUP_S = 1.0
Listeners = list[trio.SocketListener]


@attrs.frozen
class Endpoints:
    host: str
    port: int
    http_port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"


class StartupError(Exception):
    """The service cannot start (e.g. FFmpeg is missing); the message says why."""


def ffmpeg_version(ffmpeg: str) -> str:
    """The version word of `ffmpeg -version`. Errors: StartupError if FFmpeg cannot run."""
    try:
        out = subprocess.run([ffmpeg, "-version"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StartupError(f"cannot run FFmpeg at {ffmpeg!r}: {exc}") from None
    words = out.stdout.decode(errors="replace").split()
    return words[2] if len(words) > 2 else "unknown"


@contextlib.contextmanager
def bind_errors(what: str, host: str, port: int) -> Iterator[None]:
    """Errors: StartupError naming the address, for an OSError (a busy port, an address
    not on this machine) while the `what` endpoint binds, alone or in a group."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        found = exc.split(OSError)[0] if isinstance(exc, BaseExceptionGroup) else exc
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is None:
            raise
        assert isinstance(found, OSError)
        reason = found.strerror or str(found)
        raise StartupError(f"cannot listen on {host}:{port} ({what}): {reason}") from None


def confine_children(config: Config) -> Confinement:
    """The sandbox and limits of every FFmpeg/ffprobe child, said in the start-up log.

    Errors: StartupError when `sandbox.mode = "required"` and bwrap cannot confine FFmpeg.
    """
    executables = [
        shutil.which(name) or name for name in (config.ffmpeg.ffmpeg, config.ffmpeg.ffprobe)
    ]
    try:
        confinement = open_confinement(config, executables)
    except SandboxUnavailable as exc:
        raise StartupError(f'sandbox.mode is "required", but {exc}') from None
    active = confinement.describe()
    log.info(
        "FFmpeg children: sandbox %s (bubblewrap %s, seccomp %s), rlimits %s",
        "ON" if active["namespaces"] else "OFF",
        active["bubblewrap"] or "-",
        "on" if active["seccomp"] else "off",
        ", ".join(f"{k}={v}" for k, v in active["rlimits"].items()),
    )
    return confinement


def authenticate_clients(config: Config) -> Authenticator:
    """The token checks of `[auth]`, keys read once; whether they are on is logged.

    Errors: StartupError when mode "jwt" has no usable key file.
    """
    try:
        authenticator = Authenticator.load(config.auth)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    if authenticator.enabled:
        log.info(
            "clients: JWT required (HS256 secret %s, public keys %d, audience %r)",
            "yes" if authenticator.secret is not None else "no",
            len(authenticator.public_keys),
            authenticator.audience,
        )
    else:
        # Loud only where it matters: off is the normal case on a developer's loopback.
        loopback = config.server.host in ("127.0.0.1", "::1", "localhost")
        log.log(
            logging.INFO if loopback else logging.WARNING,
            'clients: no authentication (auth.mode = "off"): anyone who reaches %s may run jobs',
            config.server.host,
        )
    return authenticator


def connection_limits(config: Config) -> ConnectionLimits:
    """What one client may make its open connection hold or do (docs/protocol.md 1)."""
    return ConnectionLimits(
        max_text_bytes=config.max_text_bytes,
        max_small_fragments=config.limits.max_small_fragments,
        messages_per_s=config.server.max_messages_per_s,
        message_burst=config.server.message_burst,
    )


def stop_grace(config: Config) -> float:
    """How long stopped jobs get to end: their FFmpeg's stop, bounded by
    `ffmpeg.kill_grace_s` (6.5 s with its default 0.5), then their cleanup."""
    return longest_stop(config.ffmpeg.kill_grace_s) + JOB_CLEANUP_S


async def drain_jobs(services: Services, drain: Drain, timeout_s: float, *, stop_s: float) -> None:
    """Let admitted jobs finish for `timeout_s`; then stop the rest, each telling its
    client SHUTTING_DOWN (waited for up to `stop_s`); then have every connection flush
    what it owes and close with 1001."""
    pool = services.pool
    with trio.move_on_after(timeout_s):
        await pool.wait_idle()
    if pool.admitted:
        log.warning(
            "drain: %g s passed; stopping %d job(s) still admitted (SHUTTING_DOWN)",
            timeout_s,
            pool.admitted,
        )
        drain.overdue.set()
        with trio.move_on_after(stop_s):
            await pool.wait_idle()
    drain.stopping.set()


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until cancelled or until `shutdown` is set (then drain first)."""
    # First: a missing key file must stop the start before anything else is set up.
    authenticator = await trio.to_thread.run_sync(authenticate_clients, config)
    version = await trio.to_thread.run_sync(ffmpeg_version, config.ffmpeg.ffmpeg)
    confinement = await trio.to_thread.run_sync(confine_children, config)
    security = config.security
    async with (
        open_http_client(
            connect_timeout_s=security.url_connect_timeout_s,
            read_timeout_s=security.url_read_timeout_s,
        ) as http,
        open_workspace(config.storage.temp_dir) as root,
    ):
        services = Services.start(config, http, root, confinement)
        server = config.server
        drain = Drain()

        async def handler(request: WebSocketRequest) -> None:
            await serve_connection(request, services, drain, authenticator)

        async with trio.open_nursery() as top:
            async with trio.open_nursery() as connections:
                listener = trio.CancelScope()

                async def listen(
                    *, task_status: trio.TaskStatus[list[trio.SocketListener]]
                ) -> None:
                    with listener:
                        await serve_websocket(
                            handler,
                            server.host,
                            server.port,
                            handler_nursery=connections,
                            handshake_timeout=server.handshake_timeout_s,
                            receive_size=server.receive_buffer_kb * 1024,
                            door=FrontDoor.open(config, services.metrics, services.audit),
                            limits=connection_limits(config),
                            task_status=task_status,
                        )

                with bind_errors("WebSocket", server.host, server.port):
                    listeners = await top.start(listen)
                port = listeners[0].socket.getsockname()[1]
                # After the listener: the console's page is told the WebSocket port bound.
                console = Console.load(config, port) if server.console else None
                with bind_errors("HTTP", server.host, server.http_port):
                    http_port = await top.start(
                        serve_http,
                        services,
                        authenticator,
                        version,
                        server.host,
                        server.http_port,
                        console,
                    )
                endpoints = Endpoints(server.host, port, http_port)
                log.info("ffserve listening on %s (HTTP on port %d)", endpoints.url, http_port)
                task_status.started(endpoints)
                if shutdown is None:
                    await trio.sleep_forever()
                await shutdown.wait()
                services.admission.draining = True
                listener.cancel()
                await drain_jobs(services, drain, server.drain_timeout_s, stop_s=stop_grace(config))
                # What is left is bounded too, as on hypercorn's worker_serve: a client
                # that reads nothing must not hold the exit past the close handshake.
                connections.cancel_scope.deadline = trio.current_time() + CLOSE_GRACE_S
            top.cancel_scope.cancel()
