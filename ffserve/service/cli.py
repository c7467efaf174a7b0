"""`ffserve serve [--config PATH] [--host H] [--port N] [--http-port N]`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import signal
import sys
from pathlib import Path

import trio

from ffserve import __version__
from ffserve.config import Config, ConfigError
from ffserve.service.server import StartupError, ffmpeg_version, serve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ffserve", description="FFmpeg jobs over WebSocket")
    parser.add_argument("--version", action="version", version=f"ffserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the service")
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config (default: ./config.toml if it exists)",
    )
    run.add_argument("--host", help="override [server] host")
    run.add_argument("--port", type=int, help="override [server] port")
    run.add_argument("--http-port", type=int, help="override [server] http_port")
    run.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path("config.toml").is_file():
        path = Path("config.toml")
    config = Config.load(path)
    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("http_port", args.http_port))
        if v is not None
    }
    return config.replace("server", **overrides) if overrides else config


async def serve_until_signalled(config: Config) -> None:
    """First SIGINT/SIGTERM drains and stops; a second one stops at once."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    if shutdown.is_set():
                        nursery.cancel_scope.cancel()
                        return
                    logging.getLogger("ffserve").info("shutting down (again to stop now)")
                    shutdown.set()

        nursery.start_soon(watch_signals)
        await serve(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


def configure_logging(level: str) -> None:
    """The service's logging: `level` for ffserve, WARNING for httpx and httpcore.

    httpx logs every request's full URL at INFO ("HTTP Request: PUT https://user:pw@host/
    x?X-Amz-Signature=..."), secrets included; ffserve logs each request itself, redacted
    (`ffserve.transfer.safehttp`). Held at WARNING even when `level` is DEBUG.
    """
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"ffserve: {exc}", file=sys.stderr)
        return 2
    try:
        # Checked here, before Trio: inside the nursery tree it would arrive as a group.
        ffmpeg_version(config.ffmpeg.ffmpeg)
    except StartupError as exc:
        print(f"ffserve: {exc}", file=sys.stderr)
        return 1
    raise_open_files_limit()
    failed = False
    try:
        trio.run(serve_until_signalled, config)
    except* StartupError as group:  # e.g. sandbox.mode "required" and no working bubblewrap
        for error in group.exceptions:
            print(f"ffserve: {error}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each connection is a socket, and each job
    holds input and output files (a queued v1 output is an open file). Debian's soft
    limit of 1024 would refuse connections long before `max_connections`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
