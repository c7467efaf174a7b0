"""Per-job temporary directories under one per-server root.

A job's dir has a random name; nothing a client sends becomes part of a path. The
server's root is removed when it stops, taking anything a crash left behind with it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

CLEANUP_GRACE_S = 10.0


async def remove_tree(path: Path) -> None:
    """Remove `path`, even while the caller is being cancelled."""
    with trio.move_on_after(CLEANUP_GRACE_S, shield=True):
        await trio.to_thread.run_sync(shutil.rmtree, path, True)


@asynccontextmanager
async def open_workspace(base: str) -> AsyncIterator[Path]:
    """A private root dir for this server's jobs, removed on exit."""
    parent = Path(base) if base else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ffserve-", dir=parent))
    try:
        yield root
    finally:
        await remove_tree(root)


@asynccontextmanager
async def job_dir(root: Path) -> AsyncIterator[Path]:
    """A fresh dir for one job, removed however the job ends."""
    path = Path(tempfile.mkdtemp(prefix="job-", dir=root))
    try:
        yield path
    finally:
        await remove_tree(path)
