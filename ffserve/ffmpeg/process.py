"""Run FFmpeg and ffprobe as child processes that are always terminated and reaped.

Cancellation: when the caller's scope is cancelled the child gets SIGTERM, then SIGKILL
after `grace` seconds; `trio.run_process` waits for it to exit before returning, so no
child outlives the job that started it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.progress import ProgressParser

STDERR_TAIL_BYTES = 8192


class ProcessFailed(JobError):
    """The child exited non-zero; `summary` is a short, path-free account for the client."""

    code = ErrorCode.JOB_FAILED

    def __init__(self, message: str, returncode: int, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


async def _terminate(grace: float, process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
        return
    process.kill()


async def _spawn(
    nursery: trio.Nursery, args: Sequence[str], *, grace: float, cwd: str | None, niceness: int
) -> trio.Process:
    """Start a child in `nursery` with pipes; it is reaped however the nursery ends."""
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
            deliver_cancel=partial(_terminate, grace),
            cwd=cwd,
        )
    )
    if niceness:
        # Media work yields the CPU to the event loop, so pings and progress stay prompt
        # while every core is encoding. (Set from outside: preexec_fn is unsafe with threads.)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
    return process


async def _keep_tail(stream: trio.abc.ReceiveStream, tail: bytearray) -> None:
    async for chunk in stream:
        tail.extend(chunk)
        del tail[:-STDERR_TAIL_BYTES]


# FFmpeg prefixes log lines with "[component @ 0x55d0c1a2b3c0] ": a heap address.
_LOG_CONTEXT = re.compile(r"\[[^\]\n]*@ 0x[0-9a-fA-F]+\] ?")
_PATHS = re.compile(r"(?:file:)?/[^\s'\",:]+")


def summarize(stderr: bytes, *, scrub: Sequence[str] = ()) -> str:
    """The last few meaningful stderr lines for a client: no server paths, no addresses."""
    text = stderr.decode("utf-8", "replace")
    for secret in scrub:
        if secret:
            text = text.replace(secret, "")
    text = _PATHS.sub("<file>", _LOG_CONTEXT.sub("", text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-400:]


async def run_ffmpeg(
    args: Sequence[str],
    *,
    parser: ProgressParser,
    on_progress: Callable[[float], None],
    grace: float,
    cwd: str | None = None,
    niceness: int = 0,
) -> None:
    """Run FFmpeg with `-progress pipe:1` already in `args`, reporting progress as it rises.

    Errors: ProcessFailed with the stderr tail if FFmpeg exits non-zero.
    """
    tail = bytearray()
    async with trio.open_nursery() as nursery:
        process = await _spawn(nursery, args, grace=grace, cwd=cwd, niceness=niceness)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, tail)
        async for chunk in process.stdout:
            if parser.feed(bytes(chunk)):
                on_progress(parser.percentage)
    if process.returncode != 0:
        raise ProcessFailed(
            "FFmpeg failed", process.returncode or 0, bytes(tail).decode("utf-8", "replace")
        )


async def run_capture(
    args: Sequence[str], *, grace: float, niceness: int = 0, limit: int = 16 * 1024 * 1024
) -> bytes:
    """Run a short-lived tool (ffprobe) and return its stdout.

    Errors: ProcessFailed if it exits non-zero or prints more than `limit` bytes.
    """
    out = bytearray()
    err = bytearray()

    too_large = False
    async with trio.open_nursery() as nursery:
        process = await _spawn(nursery, args, grace=grace, cwd=None, niceness=niceness)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, err)
        async for chunk in process.stdout:
            out.extend(chunk)
            if len(out) > limit:
                # Raised after the nursery, not in it, where it would become a group.
                too_large = True
                nursery.cancel_scope.cancel()
                break
    if too_large:
        raise ProcessFailed("tool output too large", -1, "")
    if process.returncode != 0:
        raise ProcessFailed(
            "probe failed", process.returncode or 0, bytes(err).decode("utf-8", "replace")
        )
    return bytes(out)
