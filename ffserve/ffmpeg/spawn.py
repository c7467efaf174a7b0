"""Starting one FFmpeg or ffprobe child: in its sandbox, bounded before it may exec.

With a sandbox the child is bwrap, which reports its own child's pid on `--info-fd` and
holds it before exec until a byte arrives on `--block-fd`: the server sets its rlimits
(prlimit(2)) in between. Without one, the rlimits are set just after the start.
Where the process goes (a nursery's `launch.run`, or a warm sandbox's owner) is the
caller's `Start`; so is waiting for it.

bwrap lets its child go on end-of-file on `--block-fd` as on a byte, and that child has
no death signal before it goes (`--die-with-parent` is set after): killing bwrap leaves
it held, an orphan, and closing the pipe then would let it exec unbounded. So the pipe
is closed only after the byte (the rlimits set), or after bwrap's whole process group,
which the held child shares until it goes, has been killed (`Held.stop`).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path

import attrs
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.cgroup import JobCgroup, JobCgroups
from ffserve.ffmpeg.launch import Launched
from ffserve.ffmpeg.sandbox import ChildLimits, Confinement, Sandbox, SandboxPipes, child_pid

log = logging.getLogger(__name__)
BWRAP_SAYS = b"bwrap: "
SANDBOX_EXIT_S = 2.0  # for the kernel to finish a sandbox whose bwrap has exited
# Starts `command` with these fds passed, stdout and stderr piped, as the leader of a new
# session (`start_new_session`: its process group is `Held.stop`'s); returns the process.
Start = Callable[[list[str], Sequence[int]], Awaitable[Launched]]


def longest_stop(grace: float) -> float:
    """The longest a cancelled FFmpeg or ffprobe run may take to end, with `grace` as
    `ffmpeg.kill_grace_s`: SIGTERM, `grace`, SIGKILL (`terminate`), then the shielded
    waits for its sandbox to be gone (`Child.sandbox_exited`) and, in a warm sandbox,
    its shell's (`ffserve.ffmpeg.warm`), each `grace` + SANDBOX_EXIT_S at most."""
    return 3 * grace + 2 * SANDBOX_EXIT_S


async def spawn(
    start: Start,
    args: Sequence[str],
    *,
    confinement: Confinement,
    workdir: Path,
    writable: bool,
) -> Child:
    """Start a child with `start`, confined and bounded (`ffserve.ffmpeg.sandbox`), in
    `workdir`. Whoever `start` gives the process to waits for it, however this ends."""
    sandbox = confinement.sandbox
    if sandbox is None:
        cgroup = confinement.cgroups.make() if confinement.cgroups else None
        try:
            process = await start(list(args), ())
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        child = Child(process, cgroup=cgroup)
        # Unconfined: bounded from outside just after it starts (preexec_fn is unsafe
        # with threads). Whoever reaps it removes the cgroup (`Child.sandbox_exited`).
        confinement.limits.apply(process.pid, confined=False)
        if cgroup is not None:
            with suppress(ProcessLookupError):
                cgroup.enter(process.pid)
        return child
    held = await hold(start, args, sandbox=sandbox, workdir=workdir, writable=writable)
    return await held.release(confinement.limits, confinement.cgroups)


async def hold(
    start: Start, args: Sequence[str], *, sandbox: Sandbox, workdir: Path, writable: bool
) -> Held:
    """Start bwrap building the sandbox for `args`; it holds its child before exec until
    `Held.release`."""
    pipes = SandboxPipes.open(sandbox.seccomp)
    try:
        command = sandbox.command(
            args,
            workdir=workdir,
            writable=writable,
            info_fd=pipes.info_write,
            block_fd=pipes.block_read,
            seccomp_fd=pipes.seccomp_read,
        )
        process = await start(command, pipes.child_ends)
    except BaseException:
        pipes.close()  # `start` raised: it started nothing that could read them
        raise
    pipes.close_child_ends()
    return Held(process, pipes)


@attrs.define(eq=False)
class Held:
    """bwrap with a child it holds before exec (`--block-fd`): the sandbox is built, or
    being built, and nothing of the tool has run yet. Released once, or stopped."""

    process: Launched
    pipes: SandboxPipes

    async def release(self, limits: ChildLimits, cgroups: JobCgroups | None = None) -> Child:
        """Bound the held child (rlimits, niceness, a cgroup of its own from `cgroups`)
        and let it exec.

        Cancellation: the sandbox is stopped, its child never let go."""
        process, pipes = self.process, self.pipes
        cgroup: JobCgroup | None = None
        try:
            # bwrap reports its child on `info`; if it fails first, the pipe just closes.
            pid = await read_child_pid(pipes.info_read)
            pidfd = None if pid is None else _open_held_child(pid, process.pid)
            if pid is None or pidfd is None:  # bwrap failed or died
                self.stop()
                return Child(process, sandboxed=True, sandbox_failed=True)
            try:
                if cgroups is not None:
                    # The held child is the sandbox's only process yet: all it starts,
                    # FFmpeg included, is born in the cgroup.
                    cgroup = cgroups.make()
                    cgroup.enter(pid)
                limits.apply(pid, confined=True)
                os.write(pipes.block_write, b"x")
            except BaseException:
                os.close(pidfd)  # nothing will wait on this
                raise
            return Child(process, sandboxed=True, pidfd=pidfd, cgroup=cgroup)
        except (BrokenPipeError, ProcessLookupError):  # it died setting the sandbox up
            self.stop()
            _remove(cgroup)
            return Child(process, sandboxed=True, sandbox_failed=True)
        except BaseException:
            self.stop()
            _remove(cgroup)
            raise
        finally:
            pipes.close()  # after the byte, or after `stop`

    def stop(self) -> None:
        """Kill bwrap and what it holds, then close the pipes. The held child is in bwrap's
        process group until it is let go (`--new-session`), and has no death signal yet:
        SIGKILL to the group reaches it whatever bwrap has done, and once it is sent the
        child can run nothing more, whatever it reads. (The group keeps bwrap's id while
        any process of it is left, bwrap reaped or not.)"""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.pipes.close()

    async def abandon(self) -> None:
        """Never released: stopped and reaped. The caller shields this."""
        self.stop()
        await self.process.wait()


def _remove(cgroup: JobCgroup | None) -> None:
    # After `Held.stop`: the SIGKILLed child may still be leaving; `remove` waits for it.
    if cgroup is not None:
        cgroup.remove()


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
    before reporting the child. `cgroup`: its own, with memory.max, where there are any."""

    process: Launched
    sandboxed: bool = False
    pidfd: int | None = None
    sandbox_failed: bool = False
    cgroup: JobCgroup | None = None

    async def sandbox_exited(self, grace: float) -> None:
        """Wait (shielded, bounded) until every process of the sandbox has exited; then
        remove its cgroup (killing what would still be in it)."""
        if self.pidfd is not None:
            # bwrap has exited, so must the sandbox: its first process has the death
            # signal from just after it is let go; if bwrap died before that, this kills it.
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            with trio.move_on_after(grace + SANDBOX_EXIT_S, shield=True):
                await trio.lowlevel.wait_readable(self.pidfd)
            _reap_orphan(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        _remove(self.cgroup)

    def memory_exceeded(self) -> int | None:
        """memory.max in MiB if the kernel killed a process of it for passing it."""
        cgroup = self.cgroup
        return cgroup.memory_mib if cgroup is not None and cgroup.oom_kills() else None

    def never_ran(self, stderr: bytes) -> bool:
        """Whether bwrap failed to set the sandbox up, so the tool never ran: a server
        fault, not the input's. Its errors after reporting the child (a mount that fails)
        exit 1 like FFmpeg's, but only bwrap starts a line with its name."""
        if self.sandbox_failed:
            return True
        return self.sandboxed and self.process.returncode != 0 and stderr.startswith(BWRAP_SAYS)


def _reap_orphan(pidfd: int) -> None:
    """Collect the sandbox's init if it became ours. bwrap exits a moment before it, so
    it is orphaned and reparented to the nearest reaper: in a container, the server
    itself (PID 1), which would otherwise keep one zombie per run until the pid limit
    stops every job. Through its pidfd, never a wait on any child: that would steal
    the exit status a launch thread is waiting for."""
    with suppress(ChildProcessError):  # not ours (its reaper is another process)
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


class MemoryExceeded(JobError):
    """The kernel killed FFmpeg (or ffprobe) for passing its cgroup's memory.max."""

    code = ErrorCode.TOO_LARGE

    def __init__(self, mib: int) -> None:
        super().__init__(
            f"FFmpeg exceeded the memory limit of {mib} MiB",
            details={"limit": "memory", "job_memory_mib": mib},
        )


class SandboxFailed(JobError):
    """bwrap could not start FFmpeg. Its own words go to the server's log, not the client."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(self, stderr: bytes) -> None:
        super().__init__("the server could not start FFmpeg")
        log.error(
            "bubblewrap failed to start a child: %s", stderr.decode("utf-8", "replace")[-400:]
        )


async def read_child_pid(fd: int) -> int | None:
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
