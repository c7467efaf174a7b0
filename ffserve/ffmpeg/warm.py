"""Warm sandboxes: a job's sandbox is built while its input arrives, not after.

bubblewrap takes 3-4 ms of wall time and as much CPU to build a sandbox (namespaces, a
dozen mounts, the seccomp filter, rlimits set while it holds the child): on a thumbnail
job of ~110 ms that is most of what confinement adds. So a job that will run FFmpeg
has bwrap build its sandbox as soon as it has a dir, while the input arrives, around a
shell held before exec; once the input is in, the shell is bounded and let start (`arm`),
and waits on its stdin; when the plan is made and a worker slot is free, `run_ffmpeg`
hands it FFmpeg's command line and the shell execs it (it cannot fork: the seccomp filter
refuses). FFmpeg gets the same sandbox, limits and pipes as from a cold start.

Bounded: at most `jobs.max_concurrent` warm sandboxes wait at once (three small processes
each); a job that finds none free starts its FFmpeg cold, as before.

No nursery is held around the job's steps (an error raised in them would arrive wrapped
in an ExceptionGroup): the warm process is opened here and waited for here, on leaving.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from ffserve.ffmpeg.cgroup import JobCgroups
from ffserve.ffmpeg.launch import Launched, launch, terminate
from ffserve.ffmpeg.sandbox import ChildLimits, Confinement
from ffserve.ffmpeg.spawn import SANDBOX_EXIT_S, Child, Held, hold


@attrs.define(eq=False)
class Warm:
    """A sandbox built ahead of its FFmpeg around a shell held before exec. `arm` bounds
    and starts the shell (it then waits on its stdin for one command line); `take` hands
    the armed child to `run_ffmpeg`, once. Unused, it ends when its context does."""

    held: Held
    limits: ChildLimits
    grace: float
    cgroups: JobCgroups | None = None
    child: Child | None = None
    taken: bool = False

    async def arm(self) -> None:
        """Let the shell start, bounded. Called once the job's input is in: by then bwrap
        has long built the sandbox, so this costs a few system calls. A bwrap that has
        still not reported its child within `grace + SANDBOX_EXIT_S` (as long as ending
        one may take) is stopped, and the job's FFmpeg starts cold."""
        if self.child is None:
            with trio.move_on_after(self.grace + SANDBOX_EXIT_S):
                self.child = await self.held.release(self.limits, self.cgroups)
            if self.child is None:  # given up: `release` has stopped it
                self.child = Child(self.held.process, sandboxed=True, sandbox_failed=True)

    async def take(self) -> Child | None:
        """The armed child, once; None when taken before or when its sandbox has ended."""
        await self.arm()
        child = self.child
        if self.taken or child is None or child.sandbox_failed or child.process.poll() is not None:
            return None
        self.taken = True
        return child


@asynccontextmanager
async def open_warm(
    confinement: Confinement, workdir: Path, *, shell: str, grace: float
) -> AsyncIterator[Warm]:
    """A warm sandbox for FFmpeg around `workdir` (writable), as `run_ffmpeg` builds one.

    Cancellation: on leaving, every process of it has exited: never armed, bwrap and the
    child it holds are killed before that child may exec (`Held.stop`); armed and unused,
    the shell reads end-of-input and exits (SIGTERM, SIGKILL if it does not); used,
    `exec_in` has already waited for FFmpeg.
    """
    sandbox = confinement.sandbox
    assert sandbox is not None

    async def start(command: list[str], pass_fds: Sequence[int]) -> Launched:
        return await launch(command, stdin=True, pass_fds=pass_fds, cwd=workdir)

    held = await hold(start, [shell, "-s"], sandbox=sandbox, workdir=workdir, writable=True)
    warm = Warm(held, confinement.limits, grace, confinement.cgroups)
    process = held.process
    try:
        yield warm
    finally:
        with trio.move_on_after(grace + SANDBOX_EXIT_S, shield=True):
            if warm.child is None:
                await held.abandon()
            elif process.stdin is not None:
                await process.stdin.aclose()  # an idle shell exits at end of input
            with trio.move_on_after(grace):
                await process.wait()
            if process.poll() is None:
                await terminate(grace, process)
            await process.wait()
        process.close()
        if warm.child is not None:
            await warm.child.sandbox_exited(grace)


@asynccontextmanager
async def exec_in(
    child: Child, args: Sequence[str], *, grace: float
) -> AsyncIterator[tuple[trio.Nursery, Child]]:
    """What `_running` gives, for a warm child: its shell execs `args`, so FFmpeg keeps the
    sandbox, the rlimits and the pipes. On leaving, FFmpeg has exited, stopped (SIGTERM,
    grace, SIGKILL) if the caller was cancelled or failed."""
    process = child.process
    assert process.stdin is not None
    try:
        # shlex.join quotes every argument for the POSIX shell: nothing in them is parsed.
        await process.stdin.send_all(f"exec {shlex.join(args)}\n".encode())
        await process.stdin.aclose()
        async with trio.open_nursery() as nursery:
            yield nursery, child
        await process.wait()
    except BaseException:
        with trio.move_on_after(grace + SANDBOX_EXIT_S, shield=True):
            if process.poll() is None:
                await terminate(grace, process)
            await process.wait()
        raise


@attrs.frozen(eq=False)
class WarmSandboxes:
    """The server's warm sandboxes: at most `limiter.total_tokens` at once."""

    confinement: Confinement
    grace: float
    limiter: trio.CapacityLimiter

    @classmethod
    def start(cls, confinement: Confinement, *, at_once: int, grace: float) -> WarmSandboxes:
        return cls(confinement, grace, trio.CapacityLimiter(at_once))

    @asynccontextmanager
    async def open(self, workdir: Path) -> AsyncIterator[Warm | None]:
        """A warm sandbox around `workdir`, or None (no sandbox, warm off, none free)."""
        sandbox = self.confinement.sandbox
        shell = sandbox.shell if sandbox is not None else None
        if shell is None or not self.confinement.warm:
            yield None
            return
        borrower = object()  # the job's place, whichever task enters and leaves
        try:
            self.limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            yield None
            return
        try:
            async with open_warm(self.confinement, workdir, shell=shell, grace=self.grace) as warm:
                yield warm
        finally:
            self.limiter.release_on_behalf_of(borrower)
