"""Per-job temporary directories under one per-server root.

A job's dir has a random name; nothing a client sends becomes part of a path. The
server's root is removed when it stops. A server that is killed (SIGKILL, OOM, power)
cannot remove its root, so each server at its start removes the roots whose owner is
gone.

Whose root is whose: the owner holds an exclusive `flock` on its root dir for as long as
it runs, and the kernel drops that lock when the process dies, however it dies. A root
whose lock can be taken has no owner left. This holds for several servers sharing one
temp dir, in different containers too (PID namespaces hide each other's pids, so a pid
in the name alone could not tell; it is there for the operator). A root is made under a
name no sweep reads (`.ffserve-new-*`) and renamed once locked, so a sweep cannot take
a root in the moment between its creation and its lock. Roots named as before
(`ffserve-XXXXXXXX`, from versions without the lock) are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

log = logging.getLogger(__name__)
CLEANUP_GRACE_S = 10.0
ROOT_NAME = re.compile(r"ffserve-\d+-[A-Za-z0-9_]+")  # ffserve-<pid>-<random>


async def remove_tree(path: Path) -> None:
    """Remove `path`, even while the caller is being cancelled."""
    with trio.move_on_after(CLEANUP_GRACE_S, shield=True):
        await trio.to_thread.run_sync(shutil.rmtree, path, True)


def _lock(path: Path) -> int | None:
    """An fd holding the exclusive flock of dir `path`, or None if another has it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_stale_roots(parent: Path) -> list[Path]:
    """Remove the job roots in `parent` whose servers are gone; returns them."""
    removed = []
    for root in parent.glob("ffserve-*"):
        if not ROOT_NAME.fullmatch(root.name) or not root.is_dir():
            continue
        try:
            fd = _lock(root)
        except OSError:
            continue  # gone meanwhile (another server's sweep), or not ours to read
        if fd is None:
            continue  # its server is running
        try:
            shutil.rmtree(root, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(root)
    return removed


def _make_root(parent: Path) -> tuple[Path, int]:
    staging = Path(tempfile.mkdtemp(prefix=".ffserve-new-", dir=parent))
    fd = _lock(staging)
    assert fd is not None  # nobody else knows the name yet
    root = parent / f"ffserve-{os.getpid()}-{staging.name.removeprefix('.ffserve-new-')}"
    try:
        staging.rename(root)
    except BaseException:
        os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root, fd


@asynccontextmanager
async def open_workspace(base: str) -> AsyncIterator[Path]:
    """A private root dir for this server's jobs, removed on exit; roots that killed
    servers left in the same place are removed first."""
    parent = Path(base) if base else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    for stale in await trio.to_thread.run_sync(sweep_stale_roots, parent):
        log.warning("removed %s, left by a server that is gone", stale.name)
    root, lock = await trio.to_thread.run_sync(_make_root, parent)
    try:
        yield root
    finally:
        await remove_tree(root)
        with contextlib.suppress(OSError):
            os.close(lock)


@asynccontextmanager
async def job_dir(root: Path) -> AsyncIterator[Path]:
    """A fresh dir for one job, removed however the job ends."""
    path = Path(tempfile.mkdtemp(prefix="job-", dir=root))
    try:
        yield path
    finally:
        await remove_tree(path)
