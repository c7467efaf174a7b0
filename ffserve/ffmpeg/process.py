"""Run FFmpeg and ffprobe as child processes that are always confined, bounded and reaped.

Cancellation: when the caller's scope is cancelled the child gets SIGTERM, then SIGKILL
after `grace` seconds (a sandboxed FFmpeg dies with the bwrap it runs under, SIGKILLed by
`--die-with-parent`, or by the server once bwrap has exited: `Child.sandbox_exited`);
`launch.run` waits for it to exit before returning, so no child outlives the job that
started it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg import launch
from ffserve.ffmpeg.launch import Launched
from ffserve.ffmpeg.progress import ProgressParser
from ffserve.ffmpeg.sandbox import Confinement
from ffserve.ffmpeg.spawn import Child, MemoryExceeded, SandboxFailed, spawn
from ffserve.ffmpeg.warm import Warm, exec_in

STDERR_TAIL_BYTES = 8192
FFMPEG_TRAPPED_SIGNAL = 255


class ProcessFailed(JobError):
    """The child exited non-zero; `summary` is a short, path-free account for the client."""

    code = ErrorCode.JOB_FAILED

    def __init__(self, message: str, returncode: int, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail

    @property
    def signal(self) -> int | None:
        """The signal that ended the child: a negative return code when it ran unconfined,
        128 + N from the bwrap it ran under."""
        if self.returncode < 0:
            return -self.returncode
        if 128 < self.returncode < 128 + 65:
            return self.returncode - 128
        return None

    @property
    def trapped_signal(self) -> bool:
        """FFmpeg traps SIGINT, SIGTERM and SIGXCPU, winds down and exits 255, saying why
        only at `-loglevel info`. Its errors exit 1 with a message at `error`."""
        return self.returncode == FFMPEG_TRAPPED_SIGNAL and not self.stderr_tail.strip()


@asynccontextmanager
async def _running(
    args: Sequence[str],
    *,
    grace: float,
    confinement: Confinement,
    workdir: Path,
    writable: bool,
) -> AsyncIterator[tuple[trio.Nursery, Child]]:
    """A started child and the nursery it lives in. On leaving, the child has been reaped
    and, when sandboxed, every process of its sandbox has exited too: bwrap can exit a
    moment before the FFmpeg under it, which the kernel kills when bwrap dies."""
    child = None
    started: list[Launched] = []
    try:
        async with trio.open_nursery() as nursery:

            async def start(command: list[str], pass_fds: Sequence[int]) -> Launched:
                run = partial(launch.run, command, pass_fds=pass_fds, cwd=workdir, grace=grace)
                # Shielded: cancelled meanwhile, `nursery.start` would keep bwrap, reap it
                # and raise, and nothing would stop what it holds.
                with trio.CancelScope(shield=True):
                    process: Launched = await nursery.start(run)
                started.append(process)
                return process

            child = await spawn(
                start, args, confinement=confinement, workdir=workdir, writable=writable
            )
            yield nursery, child
    finally:
        for process in started:  # its readers are done: they ran in the nursery
            process.close()
        if child is not None:
            await child.sandbox_exited(grace)


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


def _check_memory(child: Child) -> None:
    """Errors: MemoryExceeded when the kernel killed the child at its cgroup's memory.max
    (it dies by SIGKILL with no word of why: only the cgroup's events tell)."""
    mib = child.memory_exceeded()
    if mib is not None:
        raise MemoryExceeded(mib)


async def run_ffmpeg(
    args: Sequence[str],
    *,
    confinement: Confinement,
    workdir: Path,
    parser: ProgressParser,
    on_progress: Callable[[float], None],
    grace: float,
    warm: Warm | None = None,
) -> None:
    """Run FFmpeg with `-progress pipe:1` already in `args`, reporting progress as it rises;
    in `warm`'s sandbox when it is still ready, else in one of its own.

    Errors: ProcessFailed with the stderr tail if FFmpeg exits non-zero; MemoryExceeded
    if the kernel killed it at its cgroup's memory.max.
    """
    tail = bytearray()
    ready = await warm.take() if warm is not None else None
    if ready is not None:
        running = exec_in(ready, args, grace=grace)
    else:
        running = _running(
            args, grace=grace, confinement=confinement, workdir=workdir, writable=True
        )
    async with running as (nursery, child):
        process = child.process
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, tail)
        async for chunk in process.stdout:
            if parser.feed(bytes(chunk)):
                on_progress(parser.percentage)
    _check_memory(child)
    if child.never_ran(bytes(tail)):
        raise SandboxFailed(bytes(tail))
    if process.returncode != 0:
        raise ProcessFailed(
            "FFmpeg failed", process.returncode or 0, bytes(tail).decode("utf-8", "replace")
        )


async def run_capture(
    args: Sequence[str],
    *,
    confinement: Confinement,
    workdir: Path,
    grace: float,
    limit: int = 16 * 1024 * 1024,
) -> bytes:
    """Run a short-lived tool (ffprobe) that only reads `workdir`; return its stdout.

    Errors: ProcessFailed if it exits non-zero or prints more than `limit` bytes;
    MemoryExceeded if the kernel killed it at its cgroup's memory.max.
    """
    out = bytearray()
    err = bytearray()

    too_large = False
    running = _running(args, grace=grace, confinement=confinement, workdir=workdir, writable=False)
    async with running as (nursery, child):
        process = child.process
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, err)
        async for chunk in process.stdout:
            out.extend(chunk)
            if len(out) > limit:
                # Raised after the nursery, not in it, where it would become a group.
                too_large = True
                nursery.cancel_scope.cancel()
                break
    _check_memory(child)
    if child.never_ran(bytes(err)):
        raise SandboxFailed(bytes(err))
    if too_large:
        raise ProcessFailed("tool output too large", -1, "")
    if process.returncode != 0:
        raise ProcessFailed(
            "probe failed", process.returncode or 0, bytes(err).decode("utf-8", "replace")
        )
    return bytes(out)
