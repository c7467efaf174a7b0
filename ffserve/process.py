"""Run FFmpeg and ffprobe as child processes that are always terminated and reaped.

Cancellation: when the caller's scope is cancelled the child gets SIGTERM, then SIGKILL
after `grace` seconds; `trio.run_process` waits for it to exit before returning, so no
child outlives the job that started it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.progress import ProgressParser

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


async def _keep_tail(stream: trio.abc.ReceiveStream, tail: bytearray) -> None:
    async for chunk in stream:
        tail.extend(chunk)
        del tail[:-STDERR_TAIL_BYTES]


def summarize(stderr: bytes, *, scrub: Sequence[str] = ()) -> str:
    """The last few meaningful stderr lines, with server paths replaced."""
    text = stderr.decode("utf-8", "replace")
    for secret in scrub:
        if secret:
            text = text.replace(secret, "<job>")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-400:]


async def run_ffmpeg(
    args: Sequence[str],
    *,
    parser: ProgressParser,
    on_progress: Callable[[float], None],
    grace: float,
    cwd: str | None = None,
) -> None:
    """Run FFmpeg with `-progress pipe:1` already in `args`, reporting progress as it rises.

    Errors: ProcessFailed with the stderr tail if FFmpeg exits non-zero.
    """
    tail = bytearray()
    async with trio.open_nursery() as nursery:
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
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, tail)
        async for chunk in process.stdout:
            if parser.feed(bytes(chunk)):
                on_progress(parser.percentage)
    if process.returncode != 0:
        raise ProcessFailed(
            "FFmpeg failed", process.returncode or 0, bytes(tail).decode("utf-8", "replace")
        )


async def run_capture(args: Sequence[str], *, grace: float, limit: int = 16 * 1024 * 1024) -> bytes:
    """Run a short-lived tool (ffprobe) and return its stdout.

    Errors: ProcessFailed if it exits non-zero or prints more than `limit` bytes.
    """
    out = bytearray()
    err = bytearray()

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                deliver_cancel=partial(_terminate, grace),
            )
        )
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, err)
        async for chunk in process.stdout:
            out.extend(chunk)
            if len(out) > limit:
                raise ProcessFailed("tool output too large", -1, "")
    if process.returncode != 0:
        raise ProcessFailed(
            "probe failed", process.returncode or 0, bytes(err).decode("utf-8", "replace")
        )
    return bytes(out)
