"""Starting a child on a thread that lives exactly as long as the child (issue 10).

bwrap runs with `--die-with-parent` (PR_SET_PDEATHSIG), and to the kernel its parent is
the *thread* that forked it: when that thread exits, bwrap is SIGKILLed, and its sandbox
with it. `trio.lowlevel.open_process` forks on a thread of trio's cache, which exits after
10 s idle: every sandboxed FFmpeg lasting longer than that on an otherwise idle server was
killed. So each child here is forked by a thread that then waits for it and does nothing
else: the death signal fires only once the child has exited, or when the whole server
dies (and every thread with it), as it should.

The thread reaps the child; signals go through a pidfd opened before that could happen, so
they can never reach another process that reuses the pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from trio.lowlevel import FdStream


@attrs.define(eq=False)
class Launched:
    """A started child, what the server uses of `trio.Process`: its pipes (stdin only if
    asked for), `wait`, signals. `returncode` is set once it has exited and been reaped."""

    stdin: FdStream | None
    stdout: FdStream
    stderr: FdStream
    pid: int = attrs.field(default=0, init=False)
    returncode: int | None = attrs.field(default=None, init=False)
    _pidfd: int = attrs.field(default=-1, init=False)  # open from the start until reaped
    _error: BaseException | None = attrs.field(default=None, init=False)  # it did not start
    _started: trio.Event = attrs.field(factory=trio.Event, init=False)
    _exited: trio.Event = attrs.field(factory=trio.Event, init=False)

    def poll(self) -> int | None:
        return self.returncode

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the child if it has not been reaped yet; else nothing."""
        if self._pidfd >= 0:
            with suppress(ProcessLookupError):  # exited, not reaped yet
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the server's ends of the pipes (once nothing reads or writes them)."""
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    # Called on trio's thread, from the child's own (`_fork_then_wait`).
    def _began(self, pid: int, pidfd: int) -> None:
        self.pid, self._pidfd = pid, pidfd
        self._started.set()

    def _failed(self, error: BaseException) -> None:
        self._error = error
        self._started.set()

    def _reaped(self, returncode: int) -> None:
        os.close(self._pidfd)
        self._pidfd = -1
        self.returncode = returncode
        self._exited.set()


async def launch(
    command: Sequence[str], *, stdin: bool, pass_fds: Sequence[int], cwd: Path
) -> Launched:
    """Start `command` in `cwd` as the leader of a new session (its process group is
    `Held.stop`'s), `pass_fds` passed, stdout and stderr piped, stdin piped if `stdin`
    else /dev/null.

    Cancellation: shielded (it takes as long as the fork): a started child is never lost.
    Errors: what `subprocess.Popen` raises (the command missing: FileNotFoundError).
    """
    fds: list[int] = []  # every end of every pipe, closed if one cannot be made
    try:
        for _ in range(3 if stdin else 2):
            fds += os.pipe()  # (read, write), not inherited: Popen dups the child's ends
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    out_read, out_write, err_read, err_write, *in_pipe = fds
    process = Launched(
        stdin=FdStream(in_pipe[1]) if in_pipe else None,
        stdout=FdStream(out_read),
        stderr=FdStream(err_read),
    )
    theirs = [out_write, err_write, *in_pipe[:1]]

    def fork() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(command),
            stdin=in_pipe[0] if in_pipe else subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            pass_fds=pass_fds,
            cwd=str(cwd),
            start_new_session=True,
        )

    token = trio.lowlevel.current_trio_token()
    try:
        trio.lowlevel.start_thread_soon(
            partial(_fork_then_wait, fork, token, process),
            _unwrap,
            name=f"child {Path(command[0]).name}",
        )
    except BaseException as error:  # no thread to be had
        process._failed(error)
    with trio.CancelScope(shield=True):
        await process._started.wait()
    for fd in theirs:  # the child has its copies, or failed to start
        os.close(fd)
    if process._error is not None:
        process.close()
        raise process._error
    return process


def _fork_then_wait(
    fork: Callable[[], subprocess.Popen[bytes]], token: trio.lowlevel.TrioToken, process: Launched
) -> None:
    """The child's thread: forks it, then waits until it has exited (its death signal is
    this thread's ending). Nothing else runs here."""
    try:
        child = fork()
    except BaseException as error:
        _tell(token, process._failed, error)
        return
    try:
        pidfd = os.pidfd_open(child.pid)  # before it can be reaped: only this thread reaps
    except BaseException as error:
        with suppress(ProcessLookupError):  # not reaped yet, so the pid is still the child's
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        _tell(token, process._failed, error)
        return
    told = _tell(token, process._began, child.pid, pidfd)
    returncode = child.wait()
    if not told or not _tell(token, process._reaped, returncode):
        os.close(pidfd)  # the server's trio run is over: nothing else will


def _tell(token: trio.lowlevel.TrioToken, what: Callable[..., None], *args: object) -> bool:
    """Run `what(*args)` on trio's thread; False if the trio run is over."""
    try:
        token.run_sync_soon(what, *args)
    except trio.RunFinishedError:
        return False
    return True


def _unwrap(result: Any) -> None:
    result.unwrap()  # an error escaping `_fork_then_wait` is a bug: the thread cache logs it


async def terminate(grace: float, process: Launched) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL."""
    process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
        return
    process.kill()


async def run(
    command: Sequence[str],
    *,
    pass_fds: Sequence[int],
    cwd: Path,
    grace: float,
    task_status: trio.TaskStatus[Launched] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`launch` (stdin /dev/null) for `nursery.start`, which gets the child; returns once it
    has exited. As `trio.run_process` with `deliver_cancel=partial(terminate, grace)`.

    Cancellation: SIGTERM, `grace`, SIGKILL (`terminate`), then waits for it to exit."""
    process = await launch(command, stdin=False, pass_fds=pass_fds, cwd=cwd)
    task_status.started(process)
    try:
        await process.wait()
    except BaseException:
        with trio.CancelScope(shield=True):
            await terminate(grace, process)
            await process.wait()
        raise
