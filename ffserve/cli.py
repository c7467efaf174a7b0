"""`ffserve COMMAND`: the service's commands (`serve`, `token`: ffserve.service.cli) and
the client's (`submit`, `probe`: ffserve.client.cli), each registered by its own layer."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ffserve import __version__
from ffserve.client import cli as client_cli
from ffserve.service import cli as service_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffserve", description="FFmpeg jobs over WebSocket")
    parser.add_argument("--version", action="version", version=f"ffserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    service_cli.add_commands(commands)
    client_cli.add_commands(commands)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
