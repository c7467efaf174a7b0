"""Run FFmpeg and ffprobe as child processes that are always confined, bounded and reaped.

Cancellation: when the caller's scope is cancelled the child gets SIGTERM, then SIGKILL
after `grace` seconds (a sandboxed FFmpeg dies with the bwrap it runs under, SIGKILLed by
`--die-with-parent`); `trio.run_process` waits for it to exit before returning, so no
child outlives the job that started it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.progress import ProgressParser
from ffserve.ffmpeg.sandbox import Confinement, child_pid

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 8192
FFMPEG_TRAPPED_SIGNAL = 255
BWRAP_SAYS = b"bwrap: "
SANDBOX_EXIT_S = 2.0  # for the kernel to finish a sandbox whose bwrap has exited


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


async def _terminate(grace: float, process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
        return
    process.kill()


async def _spawn(
    nursery: trio.Nursery,
    args: Sequence[str],
    *,
    grace: float,
    confinement: Confinement,
    workdir: Path,
    writable: bool,
) -> Child:
    """Start a child in `nursery` with pipes, confined and bounded (`ffserve.ffmpeg.sandbox`);
    it is reaped however the nursery ends."""
    run = partial(
        trio.run_process,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
        deliver_cancel=partial(_terminate, grace),
    )
    sandbox = confinement.sandbox
    if sandbox is None:
        process: trio.Process = await nursery.start(partial(run, list(args), cwd=str(workdir)))
        # Unconfined: bounded from outside just after it starts (preexec_fn is unsafe
        # with threads).
        confinement.limits.apply(process.pid, confined=False)
        return Child(process)
    with sandbox.pipes() as pipes:
        command = sandbox.command(
            args,
            workdir=workdir,
            writable=writable,
            info_fd=pipes.info_write,
            block_fd=pipes.block_read,
            seccomp_fd=pipes.seccomp_read,
        )
        process = await nursery.start(partial(run, command, pass_fds=pipes.child_ends))
        pipes.close_child_ends()
        # bwrap holds the child until a byte arrives on `block`: it is bounded before it
        # can exec FFmpeg. If bwrap fails first, its info pipe just closes.
        pid = await _read_child_pid(pipes.info_read)
        pidfd = None if pid is None else _open_held_child(pid, process.pid)
        if pid is None or pidfd is None:
            # bwrap failed or died: closing `block` would let whatever it still holds
            # exec unbounded, so it goes first.
            if process.returncode is None:
                process.kill()
            return Child(process, sandbox_failed=True)
        try:
            confinement.limits.apply(pid, confined=True)
            os.write(pipes.block_write, b"x")
        except BrokenPipeError:  # the child died setting the sandbox up
            os.close(pidfd)
            return Child(process, sandbox_failed=True)
        except BaseException:
            process.kill()  # before `block` closes: never let it exec unbounded
            os.close(pidfd)  # nothing will wait on this
            raise
    return Child(process, pidfd)


def _open_held_child(pid: int, bwrap_pid: int) -> int | None:
    """A pidfd of the sandbox's first process, `pid` as bwrap reported it, once it is
    certain that `pid` still names bwrap's child (held before exec, it cannot exit on its
    own; bwrap may have died, and the pid been reused, in between). None if it is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if _parent_of(pid) != bwrap_pid:
        os.close(pidfd)
        return None
    return pidfd


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


@attrs.define
class Child:
    """A started child. `pidfd`: of its sandbox's first process (its PID namespace's init),
    gone once every process of the sandbox has exited. `sandbox_failed`: bwrap gave up
    before reporting the child."""

    process: trio.Process
    pidfd: int | None = None
    sandbox_failed: bool = False

    def never_ran(self, stderr: bytes) -> bool:
        """Whether bwrap failed to set the sandbox up, so the tool never ran: a server
        fault, not the input's. Its errors after reporting the child (a mount that fails)
        exit 1 like FFmpeg's, but only bwrap starts a line with its name."""
        if self.sandbox_failed:
            return True
        return (
            self.pidfd is not None
            and self.process.returncode != 0
            and (stderr.startswith(BWRAP_SAYS))
        )


class SandboxFailed(JobError):
    """bwrap could not start FFmpeg. Its own words go to the server's log, not the client."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(self, stderr: bytes) -> None:
        super().__init__("the server could not start FFmpeg")
        log.error("bubblewrap failed to start a child: %s", summarize(stderr))


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
    try:
        async with trio.open_nursery() as nursery:
            child = await _spawn(
                nursery,
                args,
                grace=grace,
                confinement=confinement,
                workdir=workdir,
                writable=writable,
            )
            yield nursery, child
    finally:
        if child is not None and child.pidfd is not None:
            with trio.move_on_after(grace + SANDBOX_EXIT_S, shield=True):
                await trio.lowlevel.wait_readable(child.pidfd)
            os.close(child.pidfd)


async def _read_child_pid(fd: int) -> int | None:
    """The pid bwrap reports on its info pipe; None if it closes the pipe first."""
    info = b""
    # A dup: the stream closes its own fd, the caller keeps (and closes) `fd`.
    async with trio.lowlevel.FdStream(os.dup(fd)) as stream:
        while len(info) < 4096:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return None
            info += chunk
            pid = child_pid(info)
            if pid is not None:
                return pid
    return None


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
    confinement: Confinement,
    workdir: Path,
    parser: ProgressParser,
    on_progress: Callable[[float], None],
    grace: float,
) -> None:
    """Run FFmpeg with `-progress pipe:1` already in `args`, reporting progress as it rises.

    Errors: ProcessFailed with the stderr tail if FFmpeg exits non-zero.
    """
    tail = bytearray()
    running = _running(args, grace=grace, confinement=confinement, workdir=workdir, writable=True)
    async with running as (nursery, child):
        process = child.process
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_keep_tail, process.stderr, tail)
        async for chunk in process.stdout:
            if parser.feed(bytes(chunk)):
                on_progress(parser.percentage)
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

    Errors: ProcessFailed if it exits non-zero or prints more than `limit` bytes.
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
    if child.never_ran(bytes(err)):
        raise SandboxFailed(bytes(err))
    if too_large:
        raise ProcessFailed("tool output too large", -1, "")
    if process.returncode != 0:
        raise ProcessFailed(
            "probe failed", process.returncode or 0, bytes(err).decode("utf-8", "replace")
        )
    return bytes(out)
