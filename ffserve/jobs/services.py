"""What every connection and job shares for the life of the server."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import httpx
import trio

from ffserve.config import Config
from ffserve.jobs.pool import WorkerPool
from ffserve.metrics import Metrics


@attrs.define(eq=False)
class Services:
    config: Config
    pool: WorkerPool
    http: httpx.AsyncClient
    workspace: Path
    ffmpeg_version: str
    metrics: Metrics = attrs.Factory(Metrics)
    draining: bool = False
    # Set when a draining server has no jobs left: connections flush and close.
    stopping: trio.Event = attrs.Factory(trio.Event)
    # Bytes of temp disk promised to announced (chunked) uploads of live jobs.
    reserved_bytes: int = 0
    probe_slots: trio.CapacityLimiter = attrs.Factory(
        lambda: trio.CapacityLimiter(os.cpu_count() or 2)
    )
