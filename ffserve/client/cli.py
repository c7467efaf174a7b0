"""`ffserve submit FILE... --op OP [--opt KEY=VALUE ...]` and `ffserve probe FILE [--json]`.

Exit codes, for scripts:

    0    every job completed (outputs written, sha256 verified)
    1    a job failed (its error code is printed: JOB_FAILED, TIMEOUT, BUSY, ...)
    2    usage or validation: bad arguments, a missing file, options the server's schema
         refuses (checked before connecting, with the server's own messages)
    3    connection or authentication: cannot connect, HTTP 401 (token), 429, 503
    130  cancelled with Ctrl-C (each job was cancelled on the server first)

With several exit reasons, the highest wins. `--url` defaults to `$FFSERVE_URL`, else
ws://127.0.0.1:8080/; `--token` to `$FFSERVE_TOKEN`.

A connection refused, or a job the server refused before it began (BUSY, SHUTTING_DOWN),
is tried again with backoff, up to `--retries` times within `--retry-within` seconds
(ffserve.client.retry); a job whose upload began is never sent twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

from ffserve.client.connection import Client, open_client
from ffserve.client.display import JobBar, bars, probe_table, summary
from ffserve.client.errors import ClientError, ConnectionFailed, InvalidRequest, ServerError
from ffserve.client.retry import DEFAULT_RETRY, Retry
from ffserve.errors import FFserveError
from ffserve.wire.options import parse_options

OK, FAILED, USAGE, CONNECTION, CANCELLED = 0, 1, 2, 3, 130
# Operations whose files are all inputs of one job (docs/protocol.md 8.1); for the others,
# each file is a job of its own.
ONE_JOB = frozenset({"concat", "burn_subtitles"})
DEFAULT_URL = "ws://127.0.0.1:8080/"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `submit` and `probe` (each with its `handler`) on the main parser."""
    submit = commands.add_parser("submit", help="run a job on each FILE and fetch the outputs")
    submit.set_defaults(handler=submit_files)
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--op", required=True, help="the operation (docs/protocol.md 5)")
    submit.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option; VALUE is JSON if it parses as JSON, else a string (repeatable)",
    )
    submit.add_argument("--out", type=Path, default=Path("."), help="output directory")
    probe = commands.add_parser("probe", help="print a media file's streams")
    probe.set_defaults(handler=probe_file)
    probe.add_argument("file", type=Path, metavar="FILE")
    probe.add_argument("--json", action="store_true", help="print the metadata as JSON")
    for command in (submit, probe):
        command.add_argument("--url", default=os.environ.get("FFSERVE_URL", DEFAULT_URL))
        command.add_argument(
            "--token", default=os.environ.get("FFSERVE_TOKEN"), help="or $FFSERVE_TOKEN"
        )
        command.add_argument(
            "--retries",
            type=_at_least_zero(int),
            default=DEFAULT_RETRY.retries,
            metavar="N",
            help="tries again after a refused connection, BUSY or SHUTTING_DOWN before "
            "the upload began (default %(default)s; 0: never)",
        )
        command.add_argument(
            "--retry-within",
            type=_at_least_zero(float),
            default=DEFAULT_RETRY.within_s,
            metavar="SECONDS",
            help="start no new try later than this after the first (default %(default)s)",
        )


def _at_least_zero(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is below 0")
        return value

    return parse


def retry_of(args: argparse.Namespace) -> Retry:
    return Retry(retries=int(args.retries), within_s=float(args.retry_within))


def parse_opts(pairs: list[str]) -> dict[str, Any]:
    """`["speed_factor=2", "preset=low"]` -> {"speed_factor": 2, "preset": "low"}.
    Errors: ValueError naming a pair without `=`."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def exit_code(error: BaseException) -> int:
    if isinstance(error, InvalidRequest):
        return USAGE
    if isinstance(error, ConnectionFailed):
        return CONNECTION
    return FAILED


def fail(message: str, code: int) -> int:
    print(f"ffserve: {message}", file=sys.stderr)
    return code


def checked(files: list[Path], operation: str, pairs: list[str]) -> dict[str, Any]:
    """The options, checked as the server checks them. Errors: ValueError, FFserveError."""
    for path in files:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    options = parse_opts(pairs)
    parse_options(operation, options)
    return options


def submit_files(args: argparse.Namespace) -> int:
    try:
        options = checked(args.files, args.op, args.opt)
    except ValueError as exc:
        return fail(str(exc), USAGE)
    except FFserveError as exc:
        return fail(f"{exc.code}: {exc.message}", USAGE)
    args.out.mkdir(parents=True, exist_ok=True)
    groups = [args.files] if args.op in ONE_JOB else [[path] for path in args.files]
    try:
        return trio.run(_submit, args, options, groups)
    except KeyboardInterrupt:  # before the jobs began, or a second Ctrl-C
        return fail("interrupted", CANCELLED)


def probe_file(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return fail(f"{args.file}: no such file", USAGE)
    return trio.run(_probe, args)


async def _submit(args: argparse.Namespace, options: dict[str, Any], groups: list[Any]) -> int:
    console = Console(stderr=True)
    codes = [OK]
    interrupt = trio.CancelScope()
    lines: list[str] = []

    async def one(client: Client, files: list[Path]) -> None:
        bar = JobBar.add(progress, files[0].name + (f" +{len(files) - 1}" if files[1:] else ""))
        try:
            result = await client.run(args.op, files, options, out_dir=args.out, progress=bar)
        except ServerError as exc:
            bar.end(exc.code)
            lines.append(f"ffserve: {files[0]}: {exc}")
            codes.append(exit_code(exc))
        except trio.Cancelled:  # Ctrl-C: `run` has cancelled the job on the server
            bar.end("cancelled")
            lines.append(f"ffserve: {files[0]}: job cancelled")
            raise
        except ClientError as exc:
            bar.end("failed")
            lines.append(f"ffserve: {files[0]}: {exc}")
            codes.append(exit_code(exc))
        else:
            bar.end("done")
            for line in summary(result):
                print(line)

    with bars(console) as progress:
        try:
            async with open_client(args.url, args.token, retry=retry_of(args)) as client:
                with interrupt:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_cancel_on_sigint, interrupt)
                        async with trio.open_nursery() as jobs:
                            for files in groups:
                                jobs.start_soon(one, client, files)
                        nursery.cancel_scope.cancel()
        except ClientError as exc:
            lines.append(f"ffserve: {exc}")
            codes.append(exit_code(exc))
    for line in lines:
        print(line, file=sys.stderr)
    if interrupt.cancelled_caught:
        print("ffserve: cancelled", file=sys.stderr)
        return CANCELLED
    return max(codes)


async def _cancel_on_sigint(scope: trio.CancelScope) -> None:
    """Ctrl-C cancels the jobs: each sends cancel_job and waits for JOB_CANCELLED."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _probe(args: argparse.Namespace) -> int:
    try:
        async with open_client(args.url, args.token, retry=retry_of(args)) as client:
            result = await client.run("probe", [args.file])
    except ClientError as exc:
        return fail(str(exc), exit_code(exc))
    if args.json:
        print(json.dumps(result.metadata, indent=2))
    else:
        Console().print(probe_table(result.metadata))
    return OK
