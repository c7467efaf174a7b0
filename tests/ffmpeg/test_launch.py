"""A sandboxed child lives as long as it runs, however long, on an idle server (issue 10).

bwrap runs with `--die-with-parent`, whose "parent" is the thread that forked it. Forked
on a thread of trio's cache, which exits after 10 s idle, every sandboxed FFmpeg lasting
longer than that was SIGKILLed. Here the tool waits, without CPU and without forking (the
sandbox's seccomp filter refuses), on a FIFO in its dir that the test opens only after
LASTS_S, with no other thread in use meanwhile; then it writes down what it read.

The death signal must still do its job: a server killed outright takes its sandboxes
with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ffserve.ffmpeg.launch import launch
from ffserve.ffmpeg.warm import Warm, open_warm
from tests.ffmpeg.test_sandbox import confinement
from tests.ffmpeg.test_spawn import leftovers, processes_with
from tests.ffmpeg.test_warm import run_in
from tests.helpers import wait_no_children

SH = "/usr/bin/sh"
LASTS_S = 13  # past the 10 s after which an idle thread of trio's cache exits
# Opening the FIFO to read blocks until the test opens it to write.
TOOL = [SH, "-c", 'read line < gate; echo "$line" > lasted.txt']


def open_gate(gate: Path) -> None:
    """Let the tool go: fails (ENXIO) if nothing has the FIFO open to read, i.e. the tool
    is gone. Non-blocking, so that no thread is used."""
    fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"lasted\n")
    finally:
        os.close(fd)


needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None or not Path(SH).exists(),
    reason="needs bubblewrap and /usr/bin/sh (.ci/run installs both)",
)


@needs_bwrap
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_a_sandboxed_run_outlives_an_idle_thread(tmp_path: Path, warm: bool) -> None:
    how = confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    gate = workdir / "gate"
    os.mkfifo(gate)

    async def lasts(warmed: Warm | None) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_in, how, workdir, TOOL, warmed)
            await trio.sleep(LASTS_S)
            open_gate(gate)

    with trio.fail_after(LASTS_S + 20):
        if warm:
            async with open_warm(how, workdir, shell=how.sandbox.shell, grace=1) as warmed:
                await warmed.arm()
                await lasts(warmed)
                assert warmed.taken
        else:
            await lasts(None)
    assert (workdir / "lasted.txt").read_text() == "lasted\n"
    assert await wait_no_children() == []


async def test_a_child_that_cannot_start_raises_and_leaves_no_fd(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        await launch([str(tmp_path / "missing")], stdin=True, pass_fds=(), cwd=tmp_path)
    assert set(os.listdir("/proc/self/fd")) == before


# A server in miniature: one cold and one warm sandboxed run of a tool that waits forever.
# What both miniature servers below start with: the job root and the tool from argv, a
# sandbox, and `run`, a sandboxed run of the tool in a job dir (warm or not).
MINIATURE = """
import ctypes, os, sys, trio
from pathlib import Path
from ffserve.ffmpeg.warm import open_warm
from tests.ffmpeg.test_sandbox import confinement
from tests.ffmpeg.test_warm import run_in

root, tool = Path(sys.argv[1]), sys.argv[2:]
how = confinement(root)

async def run(workdir, warm):
    await run_in(how, workdir, tool, warm)
"""

SERVER = (
    MINIATURE
    + """

def job_dir(name):
    path = root / name
    path.mkdir()
    os.mkfifo(path / "gate")
    return path

async def main():
    cold, warm_dir = job_dir("cold"), job_dir("warm")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, cold, None)
        async with open_warm(how, warm_dir, shell=how.sandbox.shell, grace=1) as warm:
            await warm.arm()
            await run(warm_dir, warm)

trio.run(main)
"""
)


@needs_bwrap
async def test_a_killed_server_takes_its_sandboxes_along(tmp_path: Path) -> None:
    marker = f"sleeps-for-{tmp_path}"
    tool = [SH, "-c", f"read line < gate # {marker}"]  # nothing writes: it waits for ever
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    server = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVER, str(tmp_path), *tool], env=env, stdin=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while len(tools(marker)) < 2:  # noqa: ASYNC110 (no event for "it started")
                await trio.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        await server.wait()
    finally:
        server.kill()
        await server.wait()
    assert await leftovers(marker) == []


def tools(marker: str) -> list[int]:
    """The sandboxed tools themselves (not the bwrap around each)."""
    found = []
    for pid in processes_with(marker):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if cmdline.read().startswith(SH.encode()):
                found.append(pid)
    return found


async def test_a_child_that_ran_leaves_no_fd_and_takes_no_signal_after(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with trio.fail_after(10):  # its stdout ends only if the server's copy of its end is closed
        process = await launch(
            [SH, "-c", "read line; echo $line"], stdin=True, pass_fds=(), cwd=tmp_path
        )
        assert process.stdin is not None
        await process.stdin.send_all(b"hello\n")
        out = b"".join([chunk async for chunk in process.stdout])
        assert (out, await process.wait()) == (b"hello\n", 0)
    process.kill()  # reaped: does nothing, and could reach no process reusing its pid
    process.close()
    assert set(os.listdir("/proc/self/fd")) == before


# A server as a container runs it, PID 1, emulated by a child subreaper: orphans of its
# children become its own. Five cold and five warm sandboxed runs: its new zombies.
AS_PID_1 = (
    MINIATURE
    + """
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0

def zombies():
    me, found = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        if ppid == me and state == "Z":
            found.append(pid)
    return len(found)

async def main():
    await trio.sleep(0.5)
    before = zombies()  # the start-up check's (`confinement`): once, not per job
    for n in range(5):
        cold, warm_dir = root / f"cold{n}", root / f"warm{n}"
        cold.mkdir()
        warm_dir.mkdir()
        await run(cold, None)
        async with open_warm(how, warm_dir, shell=how.sandbox.shell, grace=1) as warm:
            await warm.arm()
            await run(warm_dir, warm)
    await trio.sleep(0.5)
    print(zombies() - before)

trio.run(main)
"""
)


@needs_bwrap
async def test_a_server_as_pid_1_collects_each_sandbox_init(tmp_path: Path) -> None:
    """bwrap exits a moment before its sandbox's init, which is then reparented to the
    nearest reaper: in a container, the server. Each run must not leave it a zombie."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    result = await trio.run_process(
        [sys.executable, "-c", AS_PID_1, str(tmp_path), SH, "-c", "true"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
    )
    assert result.stdout.decode().strip() == "0", result.stderr.decode()[-2000:]
