"""What every scenario is given: the server, the media, how much to do, a scratch dir."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.baseline import PlainFFmpeg
from bench.media import Media
from bench.report import ScenarioResult
from bench.server import Target


@attrs.frozen
class Sizes:
    """How much each scenario does. `full()` is issue 5's; `quick()` fits in two minutes."""

    small_n: int = 64
    small_batch: int = 8
    throughput_n: int = 64
    concurrency: int = 16
    long_n: int = 5
    upload_mb: float = 200.0
    big_file_mb: float = 500.0
    chunk_window: int = 4  # unacknowledged chunks the big-file client keeps in flight
    connections: int = 2000
    connect_parallel: int = 64
    restart_concurrency: int = 4  # clients of the cluster scenario's restart and kill
    pings_in_flight: int = 16
    fairness_jobs: int = 50
    ping_interval_s: float = 0.05
    job_timeout_s: float = 120.0
    scenario_timeout_s: float = 600.0
    abuse_phase_s: float = 12.0  # each phase of the abuse scenario, idle and each attack
    abuse_connections: int = 1000  # the connection flood's attempts
    abuse_unfinished: int = 200  # connections each left with an unfinished text message

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            small_n=8,
            small_batch=4,
            throughput_n=16,
            concurrency=8,
            long_n=1,
            upload_mb=50.0,
            big_file_mb=64.0,
            connections=200,
            fairness_jobs=12,
            scenario_timeout_s=90.0,
            abuse_phase_s=4.0,
            abuse_connections=200,
            abuse_unfinished=50,
        )


@attrs.define
class Bench:
    """Everything a scenario needs: the server, the media, the sizes, a scratch dir."""

    target: Target
    media: Media
    sizes: Sizes
    scratch: Path
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    threads: int = 0
    _payloads: dict[Path, bytes] = attrs.Factory(dict)

    def payload(self, path: Path) -> bytes:
        """The file's bytes, read once: reading disk is not part of what is measured."""
        if path not in self._payloads:
            self._payloads[path] = path.read_bytes()
        return self._payloads[path]

    async def plain(self, operation: str, options: dict[str, Any], path: Path) -> PlainFFmpeg:
        return await trio.to_thread.run_sync(
            lambda: PlainFFmpeg.for_job(
                operation,
                options,
                path,
                self.scratch,
                ffmpeg=self.ffmpeg,
                ffprobe=self.ffprobe,
                threads=self.threads,
            )
        )


Scenario = Callable[[Bench, ScenarioResult], Awaitable[None]]
