"""Job roots: a server's own, and the ones killed servers leave behind in a shared temp dir.

The other "servers" are `python -c` processes that make a root as the server does and
then hold it (alive) or are SIGKILLed (gone, nothing cleaned up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from ffserve.jobs.workspace import job_dir, open_workspace

REPO = Path(__file__).resolve().parents[2]
# Makes a root (and a job dir in it, with a file), prints the root, then waits or dies.
OTHER_SERVER = """
import os, signal, sys
from pathlib import Path
from ffserve.jobs.workspace import _make_root
root, fd = _make_root(Path(sys.argv[1]))
(root / "job-x").mkdir()
(root / "job-x" / "input.mp4").write_bytes(b"x" * 1000)
print(root, flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # alive until the test closes stdin
"""


def other_server(base: Path, fate: str) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", OTHER_SERVER, str(base), fate],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None
    root = Path(process.stdout.readline().strip())
    assert root.is_dir()
    return process, root


async def test_roots_of_killed_servers_are_removed_at_start(tmp_path: Path) -> None:
    """Killed: removed. Alive (another server on the same temp dir): kept, job files and
    all. A root named as older versions named them: kept (its owner cannot be told)."""
    base = tmp_path / "work"
    base.mkdir()
    old_style = base / "ffserve-abcd1234"
    old_style.mkdir()
    with trio.fail_after(30):
        dead, dead_root = other_server(base, "die")
        assert dead.wait() == -signal.SIGKILL
        alive, alive_root = other_server(base, "wait")
        try:
            async with open_workspace(str(base)) as root:
                assert not dead_root.exists()
                assert (alive_root / "job-x" / "input.mp4").stat().st_size == 1000
                assert old_style.is_dir()
                assert root.name.startswith(f"ffserve-{os.getpid()}-")
        finally:
            assert alive.stdin is not None
            alive.stdin.close()
            alive.wait()
        # Its owner has exited now (normally, yet without cleaning up): the next start
        # takes it away.
        async with open_workspace(str(base)):
            assert not alive_root.exists()
    assert sorted(p.name for p in base.iterdir()) == ["ffserve-abcd1234"]


async def test_two_servers_in_one_process_keep_each_others_roots(tmp_path: Path) -> None:
    """The lock is per open root, not per process: a second server started by the same
    process (the tests do it) must not take the first one's root for a stale one."""
    with trio.fail_after(10):
        async with open_workspace(str(tmp_path)) as first, job_dir(first) as job:
            (job / "input").write_bytes(b"data")
            async with open_workspace(str(tmp_path)) as second:
                assert second != first
                assert (job / "input").read_bytes() == b"data"
            assert not second.exists()
        assert not first.exists()
