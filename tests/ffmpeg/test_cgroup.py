"""A cgroup v2 memory.max per FFmpeg/ffprobe sandbox (`ffserve.ffmpeg.cgroup`).

Most tests run against a fake cgroup tree (a temp dir standing for /sys/fs/cgroup): the
layout written, the held child placed before it may exec, the cgroup removed, an OOM kill
mapped to its error, and no cgroups where nothing is delegated. The last test is the real
thing: a job whose FFmpeg needs more than memory.max is killed by the kernel and the
client is told. It runs only where this process's cgroup is a delegated cgroup v2 subtree
with the memory controller (`just cgroup-test` boots a VM that has one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from ffserve.errors import ErrorCode
from ffserve.ffmpeg import cgroup as cgroup_module
from ffserve.ffmpeg.cgroup import JobCgroup, JobCgroups, NotDelegated, open_job_cgroups
from ffserve.ffmpeg.sandbox import Confinement
from ffserve.ffmpeg.spawn import MemoryExceeded, _parent_of
from ffserve.ffmpeg.warm import open_warm
from tests.conftest import Media, StartServer
from tests.ffmpeg.test_sandbox import confinement
from tests.ffmpeg.test_warm import run_in
from tests.helpers import connect, job_dirs

MIB = 1024 * 1024
FFMPEG_VERSION = [shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-version"]
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup v2 tree where this process's cgroup is /svc, with every controller. The
    kernel makes a real cgroup's files and removes them with it (rmdir); here a write makes
    the file, and the directory goes with rmtree."""
    root = tmp_path / "cgroup"
    own = root / "svc"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.procs").write_text("4242\n")
    (own / "cgroup.subtree_control").write_text("")
    (tmp_path / "self-cgroup").write_text("0::/svc\n")
    monkeypatch.setattr(cgroup_module, "remove_dir", shutil.rmtree)
    monkeypatch.setattr(cgroup_module, "WRITE_FLAGS", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    return root


def cgroups_in(jobs: Path) -> list[Path]:
    return [path for path in jobs.iterdir() if path.is_dir()]


def fake_cgroups(root: Path) -> JobCgroups:
    return open_job_cgroups(64 * MIB, 32, root=root, proc_self_cgroup=root.parent / "self-cgroup")


def test_the_server_moves_to_a_leaf_and_jobs_get_controllers(fake_root: Path) -> None:
    cgroups = fake_cgroups(fake_root)
    own = fake_root / "svc"
    assert (own / "server" / "cgroup.procs").read_text() == "4242"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (own / "jobs" / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert cgroups.jobs == own / "jobs"

    job = cgroups.make()
    assert job.path.parent == own / "jobs"
    written = {name: (job.path / name).read_text() for name in ("memory.max", "pids.max")}
    assert written == {"memory.max": str(64 * MIB), "pids.max": "32"}
    assert (job.path / "memory.swap.max").read_text() == "0"
    job.enter(1234)
    assert (job.path / "cgroup.procs").read_text() == "1234"
    assert cgroups.make().path != job.path  # one per child
    job.remove()
    assert job.removed and not job.path.exists()


def test_a_second_server_in_the_same_process_reuses_the_layout(fake_root: Path) -> None:
    """/proc/self/cgroup then names `<own>/server`: its parent is the delegated one."""
    fake_cgroups(fake_root)
    (fake_root.parent / "self-cgroup").write_text("0::/svc/server\n")
    assert fake_cgroups(fake_root).jobs == fake_root / "svc" / "jobs"


def test_an_oom_kill_is_read_before_the_cgroup_goes(fake_root: Path) -> None:
    job = fake_cgroups(fake_root).make()
    assert job.oom_kills() == 0
    (job.path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert job.oom_kills() == 1
    job.remove()
    assert job.oom_kills() == 1 and not job.path.exists()


@pytest.mark.parametrize(
    ("self_cgroup", "controllers", "why"),
    [
        ("12:memory:/user.slice\n0::/user.slice\n", "memory", "cgroup v1"),
        ("0::/svc\n", "cpu io pids", "memory controller is not delegated"),
    ],
)
def test_no_cgroups_where_nothing_is_delegated(
    fake_root: Path, self_cgroup: str, controllers: str, why: str
) -> None:
    (fake_root.parent / "self-cgroup").write_text(self_cgroup)
    (fake_root / "svc" / "cgroup.controllers").write_text(controllers)
    with pytest.raises(NotDelegated, match=why):
        fake_cgroups(fake_root)
    assert not (fake_root / "svc" / "server").exists()


def test_health_says_whether_each_sandbox_has_a_memory_max(tmp_path: Path) -> None:
    off = confinement(tmp_path, mode="off")
    if off.cgroups is None:  # this machine (cgroup v1 or hybrid): so it says
        described = off.describe()
        assert described["cgroup_memory_max"] is False
        assert described["cgroup_memory_max_mib"] is None
        assert isinstance(described["cgroup_why_not"], str) and described["cgroup_why_not"]
    on = attrs.evolve(off, cgroups=JobCgroups(tmp_path, 96 * MIB, 32), cgroup_why_not=None)
    described = on.describe()
    assert described["cgroup_memory_max"] is True
    assert described["cgroup_memory_max_mib"] == 96
    assert described["cgroup_why_not"] is None


class Entered:
    """What each child was when it was placed in its cgroup."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[int, str, int | None]] = []
        enter = JobCgroup.enter

        def record(cgroup: JobCgroup, pid: int) -> None:
            # comm: a zombie keeps it (not its cmdline), and a slow machine may see one.
            program = Path(f"/proc/{pid}/comm").read_text().strip()
            self.seen.append((pid, program, _parent_of(pid)))
            enter(cgroup, pid)

        monkeypatch.setattr(JobCgroup, "enter", record)


async def run(how: Confinement, workdir: Path, args: list[str], warm: Any = None) -> None:
    await run_in(how, workdir, args, warm)


@needs_bwrap
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_the_held_child_is_placed_before_it_may_exec_and_removed_after(
    tmp_path: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    """The pid placed is bwrap's child while bwrap still holds it (it is still bwrap, not
    the tool): all the sandbox will run is born in the cgroup. Once it ends, no cgroup."""
    entered = Entered(monkeypatch)
    cgroups = fake_cgroups(fake_root)
    how = attrs.evolve(confinement(tmp_path), cgroups=cgroups)
    workdir = tmp_path / "job"
    workdir.mkdir()
    with trio.fail_after(30):
        if warm:
            shell = how.sandbox.shell if how.sandbox else None
            assert shell is not None
            async with open_warm(how, workdir, shell=shell, grace=1.0) as ready:
                await run(how, workdir, FFMPEG_VERSION, ready)
        else:
            await run(how, workdir, FFMPEG_VERSION)
    assert len(entered.seen) == 1, entered.seen
    pid, program, parent = entered.seen[0]
    assert program == "bwrap" and parent is not None and parent != pid
    assert cgroups_in(cgroups.jobs) == []


async def test_an_unconfined_child_is_placed_too(
    tmp_path: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = Entered(monkeypatch)
    cgroups = fake_cgroups(fake_root)
    how = attrs.evolve(confinement(tmp_path, mode="off"), cgroups=cgroups)
    with trio.fail_after(30):
        await run(how, tmp_path, ["/usr/bin/sleep", "2"])  # still there when placed
    assert [program for _, program, _ in entered.seen] == ["sleep"]
    assert cgroups_in(cgroups.jobs) == []


@pytest.mark.parametrize("mode", ["off", "required"])
async def test_an_oom_kill_ends_the_run_with_its_error(
    tmp_path: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The kernel's kill leaves FFmpeg no word to say: memory.events tells, and the job
    ends TOO_LARGE naming the limit, not as FFmpeg's failure."""
    if mode == "required" and shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    make = JobCgroups.make

    def killed(cgroups: JobCgroups) -> JobCgroup:
        job = make(cgroups)
        (job.path / "memory.events").write_text("oom 1\noom_kill 1\n")
        return job

    monkeypatch.setattr(JobCgroups, "make", killed)
    cgroups = fake_cgroups(fake_root)
    how = attrs.evolve(confinement(tmp_path, mode=mode), cgroups=cgroups)
    workdir = tmp_path / "job"
    workdir.mkdir()
    with trio.fail_after(30), pytest.raises(MemoryExceeded) as raised:
        await run(how, workdir, FFMPEG_VERSION)
    assert raised.value.code == ErrorCode.TOO_LARGE
    assert raised.value.message == "FFmpeg exceeded the memory limit of 64 MiB"
    assert cgroups_in(cgroups.jobs) == []


# The real thing.


@pytest.fixture
def delegated() -> JobCgroups:
    """Skips, saying why, unless this process may have job cgroups (then set up)."""
    try:
        return open_job_cgroups(64 * MIB, 64)
    except NotDelegated as exc:
        pytest.skip(f"needs a delegated cgroup v2 with the memory controller: {exc}")


def test_a_cgroup_with_a_process_left_is_emptied_and_removed(delegated: JobCgroups) -> None:
    """It should not happen (a child's cgroup is removed once its sandbox has exited),
    but if it did the process is killed (cgroup.kill) rather than the cgroup leaked."""
    job = delegated.make()
    assert (job.path / "memory.max").read_text().strip() == str(64 * MIB)
    left = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        job.enter(left.pid)
        assert (job.path / "cgroup.procs").read_text().split() == [str(left.pid)]
        job.remove()
        assert left.wait(timeout=10) == -signal.SIGKILL
    finally:
        left.kill()
        left.wait()
    assert job.removed and not job.path.exists()


@pytest.mark.parametrize("mode", ["auto", "off"], ids=["sandboxed", "unconfined"])
async def test_a_job_past_memory_max_is_killed_and_the_client_told(
    delegated: JobCgroups, start_server: StartServer, media: Media, workdir: Path, mode: str
) -> None:
    """A 2 s clip scaled to 4096x4096: x264 holds dozens of 24 MiB frames, far past a
    128 MiB memory.max though well inside the 3 GiB address space RLIMIT_AS allows: the
    kernel kills the sandbox (or the unconfined FFmpeg), and the job ends TOO_LARGE naming
    the cgroup's limit."""
    limits = {"memory_mb": 3072, "job_memory_mb": 128}
    server = await start_server(sandbox={"mode": mode, **limits})
    with trio.fail_after(600):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            sandbox = (await http.get("/health")).json()["sandbox"]
        if mode == "auto" and not sandbox["namespaces"]:
            pytest.skip("bubblewrap does not work here: the sandboxed case cannot run")
        assert sandbox["cgroup_memory_max"] is True, sandbox
        assert sandbox["cgroup_memory_max_mib"] == 128
        options = {"filters": [{"type": "scale", "width": 4096, "height": 4096}]}
        async with connect(server.url) as client:
            result = await client.run("filter", media.clip, options)
            final = result.messages[-1]
            assert final["type"] == "error", final
            assert final["code"] == "TOO_LARGE", final
            assert final["message"] == "FFmpeg exceeded the memory limit of 128 MiB", final
            # The server goes on: a small job in the same limit completes.
            small = {"filters": [{"type": "scale", "width": 160, "height": 120}]}
            done = await client.run("filter", media.clip, small)
            assert done.messages[-1]["type"] == "completed", done.messages[-1]
    assert job_dirs(workdir) == []
    assert cgroups_in(real_jobs_cgroup()) == []


def real_jobs_cgroup() -> Path:
    """`<own>/jobs`: this process is in `<own>/server` now."""
    server_cgroup = Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip()
    return Path("/sys/fs/cgroup", server_cgroup.lstrip("/")).parent / "jobs"
