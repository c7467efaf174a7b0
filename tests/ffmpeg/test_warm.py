"""Warm sandboxes: built ahead, the same confinement as a cold start, nothing left behind.

Each test runs a small Python program the way a job's FFmpeg runs (`run_ffmpeg` with the
job's warm sandbox), or leaves the warm sandbox unused at each point a job can stop, and
then checks that no process of it remains.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ffserve.ffmpeg.process import run_ffmpeg
from ffserve.ffmpeg.progress import ProgressParser
from ffserve.ffmpeg.sandbox import Confinement
from ffserve.ffmpeg.warm import WarmSandboxes, open_warm
from tests.ffmpeg.test_sandbox import PYTHON, confinement
from tests.helpers import descendants, wait_no_children

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or not Path(PYTHON).exists(),
    reason="needs bubblewrap and /usr/bin/python3 (.ci/run installs both)",
)

REPORT = """
import json, os, resource, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
json.dump({
    "argv": sys.argv[1:],
    "as": resource.getrlimit(resource.RLIMIT_AS)[0],
    "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "nnp": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "pid": os.getpid(),
    "ppid": os.getppid(),
}, open("report.json", "w"))
"""


def warm_confinement(tmp_path: Path) -> Confinement:
    how = confinement(tmp_path)
    assert how.warm and how.sandbox is not None and how.sandbox.shell is not None
    return how


async def run_in(how: Confinement, workdir: Path, args: list[str], warm: Any) -> None:
    await run_ffmpeg(
        args,
        confinement=how,
        workdir=workdir,
        parser=ProgressParser(None),
        on_progress=lambda _: None,
        grace=1,
        warm=warm,
    )


async def test_a_warm_sandbox_confines_its_ffmpeg_as_a_cold_one(tmp_path: Path) -> None:
    """The shell execs the program with every argument exactly as given (quotes, spaces,
    newlines, `$`, `;` never parsed), in the sandbox, under the rlimits."""
    how = warm_confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    tricky = ["it's", "a b", "$(echo no)", "`id`", "x;y", "line\nbreak", "*", "", "-c"]
    with trio.fail_after(30):
        async with open_warm(how, workdir, shell=how.sandbox.shell, grace=1) as warm:
            await warm.arm()
            await run_in(how, workdir, [PYTHON, "-c", REPORT, *tricky], warm)
            assert warm.taken
    seen = json.loads((workdir / "report.json").read_text())
    assert seen["argv"] == tricky
    assert (seen["nnp"], seen["seccomp"]) == ("1", "2")
    assert seen["as"] == how.limits.memory_bytes and seen["fsize"] == how.limits.file_bytes
    # The program replaced the shell (exec, no fork): it is the init's only child.
    assert seen["pid"] == 2 and seen["ppid"] == 1
    assert await wait_no_children() == []


async def test_a_taken_warm_sandbox_is_not_used_twice(tmp_path: Path) -> None:
    """A job's second FFmpeg (burn_subtitles runs two) starts cold."""
    how = warm_confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    with trio.fail_after(30):
        async with open_warm(how, workdir, shell=how.sandbox.shell, grace=1) as warm:
            await run_in(how, workdir, [PYTHON, "-c", REPORT], warm)
            first = json.loads((workdir / "report.json").read_text())
            assert await warm.take() is None
            await run_in(how, workdir, [PYTHON, "-c", REPORT], warm)
            second = json.loads((workdir / "report.json").read_text())
    assert first["seccomp"] == second["seccomp"] == "2"
    assert await wait_no_children() == []


@pytest.mark.parametrize("armed", [False, True])
async def test_an_unused_warm_sandbox_leaves_nothing(tmp_path: Path, armed: bool) -> None:
    """A job that ends before its FFmpeg (its upload timed out, its input was refused):
    never armed, bwrap is killed before what it holds may exec; armed, the shell exits."""
    how = warm_confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    with trio.fail_after(10):
        async with open_warm(how, workdir, shell=how.sandbox.shell, grace=1) as warm:
            if armed:
                await warm.arm()
            await trio.sleep(0.05)  # bwrap has built the sandbox by now
            assert descendants(os.getpid())
    assert await wait_no_children() == []


async def test_a_cancelled_run_in_a_warm_sandbox_is_stopped_and_reaped(tmp_path: Path) -> None:
    how = warm_confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    workdir = tmp_path / "job"
    workdir.mkdir()
    sleeper = "import time; open('started', 'w').close(); time.sleep(60)"
    with trio.fail_after(20):
        async with open_warm(how, workdir, shell=how.sandbox.shell, grace=1) as warm:
            with trio.move_on_after(1) as scope:
                await run_in(how, workdir, [PYTHON, "-c", sleeper], warm)
            assert scope.cancelled_caught and (workdir / "started").exists()
            assert await wait_no_children(0.1) == []  # gone before the context ends
    assert await wait_no_children() == []


async def test_warm_sandboxes_are_bounded(tmp_path: Path) -> None:
    """At most `at_once` wait at once; past that a job starts cold (None)."""
    how = warm_confinement(tmp_path)
    warms = WarmSandboxes.start(how, at_once=2, grace=1)
    dirs = [tmp_path / f"job{i}" for i in range(3)]
    for path in dirs:
        path.mkdir()
    with trio.fail_after(10):
        async with (
            warms.open(dirs[0]) as first,
            warms.open(dirs[1]) as second,
            warms.open(dirs[2]) as third,
        ):
            assert first is not None and second is not None and third is None
        async with warms.open(dirs[2]) as again:
            assert again is not None  # given back
    off = WarmSandboxes.start(attrs.evolve(how, warm=False), at_once=2, grace=1)
    async with off.open(dirs[0]) as none:
        assert none is None
    assert await wait_no_children() == []


async def test_arming_a_sandbox_that_never_reports_is_bounded(tmp_path: Path) -> None:
    """A bwrap that neither reports its child nor exits (here a stand-in that sleeps,
    holding its info pipe): `arm` gives up within `grace + SANDBOX_EXIT_S` and stops it,
    and the job's FFmpeg starts cold, confined as ever."""
    how = warm_confinement(tmp_path)
    assert how.sandbox is not None and how.sandbox.shell is not None
    stand_in = attrs.evolve(how.sandbox, bwrap=PYTHON, base=("-c", "import time; time.sleep(60)"))
    stuck = attrs.evolve(how, sandbox=stand_in)
    workdir = tmp_path / "job"
    workdir.mkdir()
    with trio.fail_after(20):
        async with open_warm(stuck, workdir, shell=how.sandbox.shell, grace=0.1) as warm:
            await warm.arm()
            assert await warm.held.process.wait() == -signal.SIGKILL  # stopped
            await run_in(how, workdir, [PYTHON, "-c", REPORT], warm)
            assert not warm.taken
    seen = json.loads((workdir / "report.json").read_text())
    assert (seen["seccomp"], seen["as"]) == ("2", how.limits.memory_bytes)
    assert await wait_no_children() == []
