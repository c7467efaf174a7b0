"""`ffserve serve [--config PATH] [--host H] [--port N] [--http-port N]`, and
`ffserve token --sub NAME [--ttl S] [--claim KEY=VALUE ...] [--config PATH]`, which
mints an HS256 token from `[auth] secret_file` (for development, tests and operators'
own tools; an application back-end mints its own)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ffserve import __version__
from ffserve.config import Config, ConfigError
from ffserve.service.logs import FORMATS, LEVELS, Sparse, check_level, formatter
from ffserve.service.server import StartupError, ffmpeg_version, serve
from ffserve.session.auth import mint_token, read_secret

# Claims `ffserve token` sets itself.
RESERVED_CLAIMS = frozenset({"sub", "aud", "iat", "exp"})


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve` and `token` (each with its `handler`) on the main parser."""
    run = commands.add_parser("serve", help="run the service")
    run.set_defaults(handler=run_service)
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config (default: ./config.toml if it exists)",
    )
    run.add_argument("--host", help="override [server] host")
    run.add_argument("--port", type=int, help="override [server] port")
    run.add_argument("--http-port", type=int, help="override [server] http_port")
    run.add_argument("--log-level", default="info", help=f"one of {', '.join(LEVELS)}")
    run.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text (default) or json: one JSON object a line",
    )
    mint_command = commands.add_parser(
        "token", help="print an HS256 token signed with auth.secret_file"
    )
    mint_command.set_defaults(handler=mint)
    mint_command.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config (default: ./config.toml if it exists)",
    )
    mint_command.add_argument("--sub", required=True, help="the token's subject (who it is for)")
    mint_command.add_argument(
        "--ttl", type=int, default=3600, help="seconds it is valid (default 3600)"
    )
    mint_command.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another claim; VALUE is JSON if it parses as JSON, else a string (repeatable)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The service's own commands only (`ffserve.cli` adds the client's)."""
    parser = argparse.ArgumentParser(prog="ffserve", description="FFmpeg jobs over WebSocket")
    parser.add_argument("--version", action="version", version=f"ffserve {__version__}")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def parse_claims(pairs: list[str]) -> dict[str, Any]:
    """`["tier=2", "name=ann"]` -> {"tier": 2, "name": "ann"}.

    Errors: ValueError naming a pair without `=` or a claim the command sets itself."""
    claims: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--claim {pair!r} is not KEY=VALUE")
        if key in RESERVED_CLAIMS:
            raise ValueError(f"--claim {key} is set by --sub, --ttl and auth.audience")
        try:
            claims[key] = json.loads(raw)
        except ValueError:
            claims[key] = raw
    return claims


def mint(args: argparse.Namespace) -> int:
    """Print a token for `args.sub`; 1 with a one-line error if it cannot be made."""
    try:
        auth = load_config(args).auth
        if not auth.secret_file:
            raise ConfigError("ffserve token needs auth.secret_file (the HS256 secret)")
        secret = read_secret(Path(auth.secret_file))
        if args.ttl <= 0:
            raise ValueError("--ttl must be at least 1 second")
        claims = parse_claims(args.claim)
    except (ConfigError, ValueError) as exc:
        print(f"ffserve: {exc}", file=sys.stderr)
        return 1
    print(mint_token(secret, args.sub, audience=auth.audience, ttl_s=args.ttl, claims=claims))
    return 0


def load_config(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path("config.toml").is_file():
        path = Path("config.toml")
    config = Config.load(path)
    flags = (("host", "host"), ("port", "port"), ("http_port", "http_port"))
    overrides = {
        key: value for key, flag in flags if (value := getattr(args, flag, None)) is not None
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


def configure_logging(level: str, log_format: str = "text") -> None:
    """The service's logging: `level` for ffserve, WARNING for httpx and httpcore, as
    text or one JSON object a line (`ffserve.service.logs`).

    httpx logs every request's full URL at INFO ("HTTP Request: PUT https://user:pw@host/
    x?X-Amz-Signature=..."), secrets included; ffserve logs each request itself, redacted
    (`ffserve.transfer.safehttp`). Held at WARNING even when `level` is DEBUG.

    Trio's accept loop, out of descriptors, logs a traceback every 0.1 s: one line every
    10 s says as much (`Sparse`).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=check_level(level), handlers=[handler])
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    accept = logging.getLogger("trio.serve_listeners")
    if not any(isinstance(f, Sparse) for f in accept.filters):  # once, if called again
        accept.addFilter(Sparse())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def run_service(args: argparse.Namespace) -> int:
    """`ffserve serve`: 0 after a clean stop, 1 if it cannot start, 2 for a bad config or
    log level."""
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"ffserve: {exc}", file=sys.stderr)
        return 2
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
    raise_open_files_limit(config)
    failed = False
    try:
        trio.run(serve_until_signalled, config)
    except* StartupError as group:  # a busy port; sandbox.mode "required" and no bubblewrap
        for error in leaves(group):
            print(f"ffserve: {error}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def leaves(group: BaseExceptionGroup[StartupError]) -> list[StartupError]:
    """The errors in `group`, however deep the nurseries nested it."""
    found: list[StartupError] = []
    for error in group.exceptions:
        found += leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


def raise_open_files_limit(config: Config) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each connection is a socket, and each job
    holds input and output files (a queued v1 output is an open file). Debian's soft
    limit of 1024 would refuse connections long before `max_connections`. A warning if
    even the hard limit is below what the configuration may need: past it, accept fails
    (EMFILE) and new connections wait in the listen backlog until descriptors free up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    needed = open_files_needed(config)
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("ffserve").warning(
            "open files: the limit is %d, but max_connections, max_refused_connections and "
            "jobs may need about %d; past the limit new connections wait unanswered "
            "(raise `ulimit -n`, or lower server.max_connections)",
            soft,
            needed,
        )


def open_files_needed(config: Config) -> int:
    """Descriptors the configuration may hold at once: a socket per connection and per
    refused connection still open, a few per job (its files, FFmpeg's pipes and
    sandbox), and the process's own (listeners, logs, libraries)."""
    server, jobs = config.server, config.jobs
    return (
        server.max_connections
        + server.max_refused_connections
        + 8 * jobs.max_concurrent
        + 2 * jobs.queue_limit
        + 64
    )
