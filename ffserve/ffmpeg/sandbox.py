"""Where FFmpeg runs: every FFmpeg and ffprobe child in a bubblewrap sandbox, bounded.

FFmpeg's demuxers and decoders parse files from strangers; a memory-corruption bug in
any of them must reach nothing worth having. Each child gets, from bubblewrap (bwrap):
- every namespace of its own (`--unshare-all`): no network interface at all, its own
  PID tree, and a mount tree holding only `/usr` (with the loader's symlinks, its cache
  and the `/etc/alternatives` links Debian's BLAS and LAPACK resolve through, fonts for
  subtitles) read-only, a fresh `/proc`, a minimal `/dev`, and the job's own directory,
  writable for FFmpeg and read-only for ffprobe; no other job's files, no config, no keys;
- no capabilities, no-new-privileges, an empty environment, its own session, death with
  its parent, and the seccomp filter of `ffserve.ffmpeg.seccomp`.
And from the server, before it may exec FFmpeg: rlimits (address space, file size = the
output cap, CPU time from the job timeout, open files, tasks) and its niceness. They are
set with prlimit(2) on the sandboxed child while bwrap holds it (`--block-fd`, the child's
pid from `--info-fd`): no `preexec_fn` (unsafe with threads), no wrapper process.

Without bwrap (`mode = "off"`, or "auto" where it does not work) the same rlimits and
niceness are set on the unconfined child just after it starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ffserve.config import Config
from ffserve.ffmpeg.cgroup import JobCgroups, NotDelegated, open_job_cgroups
from ffserve.ffmpeg.seccomp import Unsupported, build_filter

log = logging.getLogger(__name__)
# What the dynamic loader, FFmpeg's libraries and fontconfig read outside /usr.
READ_ONLY = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/fonts", "/var/cache/fontconfig")
TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PATH = "/usr/local/bin:/usr/bin:/bin"
CPU_GRACE_S = 5  # between RLIMIT_CPU's SIGXCPU and its SIGKILL


@attrs.frozen
class ChildLimits:
    """What one FFmpeg or ffprobe process may use."""

    memory_bytes: int  # RLIMIT_AS
    file_bytes: int  # RLIMIT_FSIZE: the largest file it may write (the output cap)
    cpu_s: int  # RLIMIT_CPU soft limit (SIGXCPU); the hard limit is CPU_GRACE_S later
    open_files: int
    tasks: int
    niceness: int

    @classmethod
    def from_config(cls, config: Config) -> ChildLimits:
        # CPU time is summed over threads: a job may keep every core busy for its timeout.
        cpu = math.ceil(config.jobs.timeout_s * (os.cpu_count() or 1)) + CPU_GRACE_S
        return cls(
            memory_bytes=config.sandbox.memory_mb * 1024 * 1024,
            file_bytes=config.max_output_bytes,
            cpu_s=cpu,
            open_files=config.sandbox.open_files,
            tasks=config.sandbox.tasks,
            niceness=config.ffmpeg.niceness,
        )

    def rlimits(self, *, confined: bool) -> list[tuple[int, tuple[int, int]]]:
        limits = [
            (resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes)),
            (resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes)),
            (resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s + CPU_GRACE_S)),
            (resource.RLIMIT_NOFILE, (self.open_files, self.open_files)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if confined:
            # RLIMIT_NPROC counts every task of the real uid. In a sandbox that uid is its
            # own (a user namespace); unconfined it is the server's, whose other jobs'
            # threads would count against this child and make it fail at random.
            limits.append((resource.RLIMIT_NPROC, (self.tasks, self.tasks)))
        return limits

    def apply(self, pid: int, *, confined: bool) -> None:
        """Set every limit and the niceness of process `pid` (from outside it).
        A process that has already gone is skipped: it has nothing left to bound."""
        try:
            for which, limits in self.rlimits(confined=confined):
                resource.prlimit(pid, which, limits)
            if self.niceness:
                os.setpriority(os.PRIO_PROCESS, pid, self.niceness)
        except ProcessLookupError:
            pass


@attrs.frozen
class Sandbox:
    """bwrap's command line for a child, built once: `command` adds the job's part."""

    bwrap: str
    base: tuple[str, ...]  # the options every child gets
    seccomp: bytes | None  # the filter program, None where there is none for this machine
    version: str
    # A POSIX shell under /usr, for warm sandboxes (`ffserve.ffmpeg.warm`); None: none.
    shell: str | None = None

    def command(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        writable: bool,
        info_fd: int | None = None,
        block_fd: int | None = None,
        seccomp_fd: int | None = None,
    ) -> list[str]:
        """bwrap running `argv` with `workdir` as the only directory of the host it sees
        besides /usr (and the loader's files), writable only when `writable`."""
        job = str(workdir)
        args = [self.bwrap, *self.base, "--bind" if writable else "--ro-bind", job, job]
        # The rest of the tree (bwrap's own tmpfs root, /dev) read-only: the job's dir is
        # the one place it can write, on disk, within the file size limit.
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", job]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        if block_fd is not None:
            args += ["--block-fd", str(block_fd)]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        return [*args, "--", *argv]

    @contextmanager
    def pipes(self) -> Iterator[SandboxPipes]:
        """The pipes one sandboxed start needs; every end is closed on leaving."""
        pipes = SandboxPipes.open(self.seccomp)
        try:
            yield pipes
        finally:
            pipes.close()


@attrs.define
class SandboxPipes:
    """bwrap's side channels for one child: it tells the child's pid on `info`, holds the
    child before exec until a byte arrives on `block`, and reads the filter from `seccomp`.
    The child's ends are passed to bwrap, then closed here with `close_child_ends`."""

    info_read: int
    info_write: int
    block_read: int
    block_write: int
    seccomp_read: int | None

    @classmethod
    def open(cls, seccomp: bytes | None) -> SandboxPipes:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        seccomp_read = None
        if seccomp is not None:
            seccomp_read, seccomp_write = os.pipe()
            # The whole program fits a pipe's buffer (it is well under 4 KiB): no reader
            # needs to be running while it is written.
            os.write(seccomp_write, seccomp)
            os.close(seccomp_write)
        return cls(info_read, info_write, block_read, block_write, seccomp_read)

    @property
    def child_ends(self) -> tuple[int, ...]:
        ends = (self.info_write, self.block_read, self.seccomp_read)
        return tuple(fd for fd in ends if fd is not None and fd >= 0)

    def close_child_ends(self) -> None:
        for fd in self.child_ends:
            os.close(fd)
        self.info_write = self.block_read = -1
        self.seccomp_read = None

    def close(self) -> None:
        self.close_child_ends()
        for fd in (self.info_read, self.block_write):
            if fd >= 0:
                os.close(fd)
        self.info_read = self.block_write = -1


def child_pid(info: bytes) -> int | None:
    """The sandboxed child's pid from what bwrap wrote on its info fd, once it parses."""
    try:
        data = json.loads(info)
    except ValueError:
        return None
    pid = data.get("child-pid") if isinstance(data, dict) else None
    return pid if type(pid) is int and pid > 0 else None


def _base_options(executables: Sequence[str]) -> list[str]:
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    args += ["--setenv", "PATH", PATH, "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in TOP_LEVEL:
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    for extra in READ_ONLY:
        args += ["--ro-bind-try", extra, extra]
    mounted = {"/usr", *(top for top in TOP_LEVEL if os.path.lexists(top))}
    for executable in executables:  # an FFmpeg installed outside what is mounted above
        parts = Path(executable).parts
        if len(parts) < 2 or os.path.join("/", parts[1]) not in mounted:
            args += ["--ro-bind", executable, executable]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


def _shell() -> str | None:
    """The system's POSIX shell, where a sandbox sees it (under /usr), or None."""
    found = shutil.which("sh", path=PATH)
    shell = os.path.realpath(found) if found else None
    return shell if shell and shell.startswith("/usr/") else None


class SandboxUnavailable(Exception):
    """bwrap cannot confine FFmpeg here; the message says why."""


def open_sandbox(config: Config, executables: Sequence[str]) -> Sandbox:
    """Build the sandbox and prove it: `ffmpeg -version` must run inside it.

    Errors: SandboxUnavailable (no bwrap, or no user namespaces, or FFmpeg fails inside).
    """
    bwrap = shutil.which(config.sandbox.bwrap)
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap ({config.sandbox.bwrap!r}) is not installed")
    try:
        seccomp: bytes | None = build_filter()
    except Unsupported as exc:
        log.warning("sandbox without a seccomp filter: %s", exc)
        seccomp = None
    version = _run([bwrap, "--version"]).strip().rsplit(" ", 1)[-1]
    sandbox = Sandbox(bwrap, tuple(_base_options(executables)), seccomp, version, _shell())
    with sandbox.pipes() as pipes:
        probe = sandbox.command(
            [executables[0], "-hide_banner", "-version"],
            workdir=Path("/usr"),
            writable=False,
            seccomp_fd=pipes.seccomp_read,
        )
        out = _run(probe, pass_fds=pipes.child_ends)
    if "ffmpeg version" not in out:
        raise SandboxUnavailable("FFmpeg printed no version inside the sandbox")
    return sandbox


def _run(args: Sequence[str], pass_fds: Sequence[int] = ()) -> str:
    try:
        done = subprocess.run(args, capture_output=True, timeout=10, pass_fds=pass_fds, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"cannot run bubblewrap: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no reason"]
        raise SandboxUnavailable(f"bubblewrap failed here: {why[0][:200]}")
    return done.stdout.decode(errors="replace")


def cgroup_v2_delegated() -> bool:
    """Whether this process could make per-job cgroups: a writable cgroup v2 subtree."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    if len(lines) != 1 or not lines[0].startswith("0::"):  # v1 or hybrid hierarchies
        return False
    own = Path("/sys/fs/cgroup") / lines[0].split("::", 1)[1].lstrip("/")
    return os.access(own / "cgroup.subtree_control", os.W_OK)


@attrs.frozen
class Confinement:
    """How every FFmpeg and ffprobe child starts: in `sandbox` (None: unconfined), with
    `limits`. Made once at start-up (`open_confinement`)."""

    mode: str
    sandbox: Sandbox | None
    limits: ChildLimits
    # Build sandboxes ahead of their FFmpeg (`ffserve.ffmpeg.warm`).
    warm: bool = False
    # Read once: /health reports it on every request.
    cgroup_v2: bool = attrs.field(factory=cgroup_v2_delegated, kw_only=True)
    # Where each child gets a cgroup with memory.max (`ffserve.ffmpeg.cgroup`); None: no
    # delegated cgroup v2 here, for the reason `cgroup_why_not` gives.
    cgroups: JobCgroups | None = attrs.field(default=None, kw_only=True)
    cgroup_why_not: str | None = attrs.field(default=None, kw_only=True)

    def describe(self) -> dict[str, Any]:
        """Which protections are active, for `/health` and the start-up log."""
        sandbox, limits = self.sandbox, self.limits
        return {
            "mode": self.mode,
            "bubblewrap": sandbox.version if sandbox else None,
            "namespaces": sandbox is not None,
            "seccomp": sandbox is not None and sandbox.seccomp is not None,
            "rlimits": {
                "address_space_mib": limits.memory_bytes // (1024 * 1024),
                "file_size_mib": limits.file_bytes // (1024 * 1024),
                "cpu_s": limits.cpu_s,
                "open_files": limits.open_files,
                "tasks": limits.tasks,
                "set_before_exec": sandbox is not None,
            },
            "warm": sandbox is not None and sandbox.shell is not None and self.warm,
            # RLIMIT_AS bounds each process; memory.max each sandbox as a whole, where the
            # server's cgroup is a delegated cgroup v2 subtree (docs/sandbox.md).
            "cgroup_memory_max": self.cgroups is not None,
            "cgroup_memory_max_mib": (
                self.cgroups.memory_bytes // (1024 * 1024) if self.cgroups else None
            ),
            "cgroup_why_not": self.cgroup_why_not,
            "cgroup_v2_delegated": self.cgroup_v2,
        }


def open_confinement(config: Config, executables: Sequence[str]) -> Confinement:
    """The confinement `config.sandbox.mode` asks for, proven to work here.

    Errors: SandboxUnavailable in mode "required" when bwrap cannot confine FFmpeg.
    """
    limits = ChildLimits.from_config(config)
    mode = config.sandbox.mode
    cgroups = _cgroups(config)
    if mode == "off":
        log.warning("sandbox off: FFmpeg and ffprobe run unconfined (resource limits only)")
        return Confinement(mode, None, limits, **cgroups)
    try:
        sandbox = open_sandbox(config, executables)
    except SandboxUnavailable as exc:
        if mode == "required":
            raise
        log.warning(
            "SANDBOX NOT ACTIVE: %s. FFmpeg and ffprobe run unconfined, with resource "
            "limits only; install bubblewrap (and allow user namespaces) to confine them, "
            'or set sandbox.mode = "required" to refuse to start without it',
            exc,
        )
        return Confinement(mode, None, limits, **cgroups)
    return Confinement(mode, sandbox, limits, config.sandbox.warm, **cgroups)


def _cgroups(config: Config) -> dict[str, Any]:
    """A cgroup per child where this server's cgroup allows it; else why not (logged)."""
    memory = config.sandbox.job_memory_mb * 1024 * 1024
    try:
        cgroups = open_job_cgroups(memory, config.sandbox.tasks)
    except NotDelegated as exc:
        log.info("no cgroup memory.max per FFmpeg (RLIMIT_AS only): %s", exc)
        return {"cgroups": None, "cgroup_why_not": str(exc)}
    log.info("each FFmpeg and ffprobe sandbox gets a cgroup under %s", cgroups.jobs)
    return {"cgroups": cgroups}
