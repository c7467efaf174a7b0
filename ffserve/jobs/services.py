"""What every job uses for the life of the server. Nothing here is one job's state: the
mutable parts (the pool's queue, admission's reservations) are owned by their classes."""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx

from ffserve.audit import AuditLog
from ffserve.config import Config
from ffserve.ffmpeg.probe import Prober
from ffserve.ffmpeg.sandbox import Confinement
from ffserve.ffmpeg.warm import WarmSandboxes
from ffserve.jobs.admission import Admission
from ffserve.jobs.pool import WorkerPool
from ffserve.metrics import Metrics
from ffserve.wire.options import OPERATIONS


@attrs.frozen(eq=False)
class Services:
    config: Config
    pool: WorkerPool
    admission: Admission
    prober: Prober
    confinement: Confinement
    http: httpx.AsyncClient
    workspace: Path
    metrics: Metrics
    warm: WarmSandboxes
    audit: AuditLog

    @classmethod
    def start(
        cls,
        config: Config,
        http: httpx.AsyncClient,
        workspace: Path,
        confinement: Confinement,
    ) -> Services:
        """The services of a server with `config`, its URL client, its jobs' root dir and
        the confinement its FFmpeg children run in."""
        jobs = config.jobs
        pool = WorkerPool(jobs.max_concurrent, jobs.queue_limit, jobs.retry_after_s)
        metrics = Metrics(OPERATIONS)
        metrics.watch("jobs_running", "Jobs running FFmpeg", lambda: pool.running)
        metrics.watch("jobs_queued", "Jobs admitted and not running", lambda: pool.queued)
        metrics.watch(
            "worker_capacity", "Worker slots (jobs.max_concurrent)", lambda: pool.capacity
        )
        return cls(
            config,
            pool,
            Admission(config, pool, workspace),
            Prober(config.ffmpeg, config.limits, confinement),
            confinement,
            http,
            workspace,
            metrics,
            WarmSandboxes.start(
                confinement, at_once=config.jobs.max_concurrent, grace=config.ffmpeg.kill_grace_s
            ),
            AuditLog(),
        )
