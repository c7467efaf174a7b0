"""A cgroup v2 `memory.max` for every FFmpeg and ffprobe child, where the server may make one.

RLIMIT_AS bounds each process's address space, which is not memory: it counts what is
mapped and never touched, and nothing the kernel spends for the process. A cgroup bounds
what the whole sandbox really holds (FFmpeg, its threads, bubblewrap's init, the page
cache of what it writes), with no swap to spill into; past it the kernel kills it.

The server may make cgroups when its own (`0::/path` in /proc/self/cgroup) is a cgroup v2
directory it can write to, with the memory controller (a systemd unit with
`Delegate=yes`, a container with its own cgroup namespace). cgroup v2 lets only leaves
hold processes once controllers are enabled for children, so at start the server moves
itself (and whatever else was in its cgroup) to `<own>/server`, and each child gets
`<own>/jobs/<n>`, removed once every process of it has exited. Elsewhere (cgroup v1 or a
hybrid layout, nothing delegated) there is none, and `/health` says so.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import secrets
import time
from contextlib import suppress
from pathlib import Path

import attrs

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = "+memory +pids"
KILL_WAIT_S = 1.0


class NotDelegated(Exception):
    """No cgroup may be made here; the message says why."""


def own_cgroup(proc_self_cgroup: str, root: Path) -> Path:
    """This process's cgroup v2 directory, from the text of /proc/self/cgroup.

    Errors: NotDelegated (cgroup v1 or hybrid: more lines than the v2 one)."""
    lines = proc_self_cgroup.splitlines()
    if len(lines) != 1 or not lines[0].startswith("0::"):
        raise NotDelegated("cgroup v1 (or a hybrid v1/v2 layout): no memory controller in v2")
    return root / lines[0].split("::", 1)[1].lstrip("/")


@attrs.frozen
class JobCgroups:
    """Where the children's cgroups go: `<own>/jobs`, with the memory and pids controllers
    enabled for its children. Made once, by `open_job_cgroups`."""

    jobs: Path
    memory_bytes: int
    tasks: int
    # Names no other server sharing the cgroup (or started before in this process) uses.
    _prefix: str = attrs.field(factory=lambda: secrets.token_hex(4), eq=False)
    _names: itertools.count[int] = attrs.field(factory=itertools.count, eq=False)

    def make(self) -> JobCgroup:
        """A new cgroup for one child, bounded, empty until `JobCgroup.enter`.

        Errors: OSError (the cgroup file system refused; the caller fails the start)."""
        path = self.jobs / f"{self._prefix}-{next(self._names)}"
        path.mkdir()
        cgroup = JobCgroup(path, self.memory_bytes)
        try:
            _write(path / "memory.max", str(self.memory_bytes))
            # No swap: past memory.max the child is killed, not slowed to the disk's pace.
            # (The file is absent where the kernel does not account swap: nothing to bound.)
            _write(path / "memory.swap.max", "0", missing_ok=True)
            # Threads count: a second bound on tasks beside RLIMIT_NPROC, for the sandbox.
            # (Absent where the pids controller is not delegated.)
            _write(path / "pids.max", str(self.tasks), missing_ok=True)
        except BaseException:
            cgroup.remove()
            raise
        return cgroup


@attrs.define
class JobCgroup:
    """One child's cgroup. Entered before the child may exec, removed once it is empty."""

    path: Path
    memory_bytes: int
    removed: bool = False
    _oom_kills: int = 0

    @property
    def memory_mib(self) -> int:
        return self.memory_bytes // (1024 * 1024)

    def oom_kills(self) -> int:
        """How many of its processes the kernel killed for passing memory.max."""
        return self._oom_kills if self.removed else _oom_kills(self.path)

    def enter(self, pid: int) -> None:
        """Move process `pid` in: what it starts later is born in the cgroup.

        Errors: ProcessLookupError (it has gone), OSError."""
        _write(self.path / "cgroup.procs", str(pid))

    def remove(self) -> None:
        """Read what the kernel killed in it, then remove it. Called once every process of
        it has exited; one left (it should not be) is killed first, so none leaks."""
        if self.removed:
            return
        self._oom_kills = _oom_kills(self.path)
        try:
            remove_dir(self.path)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.error("cannot remove the job cgroup %s: %s", self.path, exc)
                return
            _write(self.path / "cgroup.kill", "1", missing_ok=True)
            self.removed = _remove_when_empty(self.path)
            return
        self.removed = True


def _remove_when_empty(path: Path) -> bool:
    """rmdir once the processes `cgroup.kill` killed have left: a moment, once each has run
    to its exit. This blocks (up to KILL_WAIT_S), but only where a process outlived its
    sandbox, which should not happen."""
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        try:
            remove_dir(path)
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                break
        time.sleep(0.005)
    log.error("cannot remove the job cgroup %s: processes are still in it", path)
    return False


def remove_dir(path: Path) -> None:
    # A cgroup's directory is removed with rmdir, its files and all (tests of a fake
    # cgroup tree put a recursive remove here).
    os.rmdir(path)


# The kernel makes a cgroup's files; opening one it did not make, with O_CREAT, fails with
# EACCES, not ENOENT (tests of a fake cgroup tree add O_CREAT here).
WRITE_FLAGS = os.O_WRONLY


def _oom_kills(path: Path) -> int:
    try:
        text = (path / "memory.events").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def _write(path: Path, text: str, *, missing_ok: bool = False) -> None:
    # One write(2) per value: the cgroup file system takes each write as one command.
    try:
        fd = os.open(path, WRITE_FLAGS, 0o644)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def open_job_cgroups(
    memory_bytes: int,
    tasks: int,
    *,
    root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
) -> JobCgroups:
    """Set up `<own>/server` (where the server goes) and `<own>/jobs`, where this process's
    cgroup allows it.

    Errors: NotDelegated, saying why not.
    """
    try:
        own = own_cgroup(proc_self_cgroup.read_text(), root)
        if own.name == "server" and (own.parent / "jobs").is_dir():
            own = own.parent  # set up by a server before this one, in this process
        controllers = (own / "cgroup.controllers").read_text().split()
    except OSError as exc:
        raise NotDelegated(f"cannot read this process's cgroup: {exc}") from None
    if "memory" not in controllers:
        raise NotDelegated(f"the memory controller is not delegated to {own}")
    if not all(
        os.access(own / name, os.W_OK) for name in ("cgroup.procs", "cgroup.subtree_control")
    ):
        raise NotDelegated(f"{own} is not writable by this process")
    try:
        server, jobs = own / "server", own / "jobs"
        server.mkdir(exist_ok=True)
        # Every process of the server's cgroup (the server, and whatever shares it) to the
        # leaf: a cgroup with processes may not give its children controllers.
        for pid in (own / "cgroup.procs").read_text().split():
            with suppress(ProcessLookupError):  # exited meanwhile
                _write(server / "cgroup.procs", pid)
        wanted = CONTROLLERS if "pids" in controllers else "+memory"
        _write(own / "cgroup.subtree_control", wanted)
        jobs.mkdir(exist_ok=True)
        _write(jobs / "cgroup.subtree_control", wanted)
    except OSError as exc:
        raise NotDelegated(f"cannot set up job cgroups under {own}: {exc}") from None
    return JobCgroups(jobs, memory_bytes, tasks)
