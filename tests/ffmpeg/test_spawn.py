"""A sandboxed start cancelled at any moment: nothing runs unbounded, nothing is left.

bwrap holds its child before exec until a byte, or end-of-file, arrives on `--block-fd`;
the server bounds the child (prlimit) in between. A job cancelled while its sandbox is
being built must never let that child go unbounded. Each test cancels starts at moments
spread over the time a start takes, with a tool that writes down the address-space limit
it finds, then checks every report and that no process of the test remains: an orphan
of a killed bwrap is no child of the test, so it is found by the test's temp dir in its
command line (every bwrap, and the sandbox's first process, name the job's dir).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import trio

from ffserve.ffmpeg.sandbox import Confinement
from ffserve.ffmpeg.warm import Warm, open_warm
from tests.ffmpeg.test_sandbox import confinement
from tests.ffmpeg.test_warm import run_in
from tests.helpers import wait_no_children

SH = "/usr/bin/sh"
pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or not Path(SH).exists(),
    reason="needs bubblewrap and /usr/bin/sh (.ci/run installs both)",
)

RUNS = 48
SPREAD_S = 0.02
# The tool: writes the limit (KiB) it was exec'd with, then stays, as FFmpeg would.
TOOL = [SH, "-c", "ulimit -v > limit.txt; exec /usr/bin/sleep 5"]
# A warm sandbox's shell, from the job's dir: writes its limit likewise, then is the shell.
SHELL = f'#!{SH}\nulimit -v > shell-limit.txt\nexec {SH} "$@"\n'


def moments() -> list[float]:
    """A cancel moment in each of RUNS equal slices of the spread, in random order."""
    delays = [(i + random.random()) * SPREAD_S / RUNS for i in range(RUNS)]
    random.shuffle(delays)
    return delays


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


async def leftovers(marker: str) -> list[int]:
    """Processes naming `marker` still there after a moment to exit; killed, so that the
    test leaves nothing behind even when it fails."""
    with trio.move_on_after(1):
        while processes_with(marker):  # noqa: ASYNC110 (no event for "an orphan exited")
            await trio.sleep(0.02)
    left = processes_with(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return left


def limits_seen(root: Path, report: str) -> dict[str, int]:
    """How many runs under `root` found each limit, "unlimited" or a number of KiB (an
    empty report: the shell was killed between opening it and writing)."""
    seen: dict[str, int] = {}
    for path in root.glob(f"run*/{report}"):
        text = path.read_text().strip()
        if text:
            seen[text] = seen.get(text, 0) + 1
    return seen


async def run(how: Confinement, workdir: Path, warm: Warm | None = None) -> None:
    await run_in(how, workdir, TOOL, warm)


async def test_a_cold_start_cancelled_at_any_moment(tmp_path: Path) -> None:
    how = confinement(tmp_path)
    left = []
    for i, delay in enumerate(moments()):
        workdir = tmp_path / f"run{i}"
        workdir.mkdir()
        with trio.fail_after(10):
            with trio.move_on_after(delay):
                await run(how, workdir)
            left += await leftovers(str(tmp_path))
    bounded = str(how.limits.memory_bytes // 1024)
    seen = limits_seen(tmp_path, "limit.txt")
    assert set(seen) <= {bounded} and not left, (seen, len(left))
    assert await wait_no_children() == []


async def test_a_warm_start_cancelled_at_any_moment(tmp_path: Path) -> None:
    """The same for a warm sandbox, cancelled while bwrap builds it, while it is armed,
    or while its shell is handed the tool's command line."""
    how = confinement(tmp_path)
    left = []
    for i, delay in enumerate(moments()):
        workdir = tmp_path / f"run{i}"
        workdir.mkdir()
        shell = workdir / "shell"
        shell.write_text(SHELL)
        shell.chmod(0o755)
        with trio.fail_after(10):
            with trio.move_on_after(delay):
                async with open_warm(how, workdir, shell=str(shell), grace=1) as warm:
                    await warm.arm()
                    await run(how, workdir, warm)
            left += await leftovers(str(tmp_path))
    bounded = str(how.limits.memory_bytes // 1024)
    seen = limits_seen(tmp_path, "shell-limit.txt"), limits_seen(tmp_path, "limit.txt")
    assert set(seen[0]) | set(seen[1]) <= {bounded} and not left, (seen, len(left))
    assert await wait_no_children() == []
