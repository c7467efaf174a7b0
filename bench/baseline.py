"""Plain FFmpeg: the exact command the service runs for a job, run by hand.

The command comes from the service's own planner (`ffserve.ffmpeg.ops.build_plan` on the
probed input), so the baseline cannot drift from what a job really costs in FFmpeg.
Only the FFmpeg process is timed: no upload, no probe, no delivery, which is what
"running FFmpeg by hand" costs a user who already has the file.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from ffserve.config import LimitsConfig
from ffserve.ffmpeg.arguments import guard_inputs, probe_args
from ffserve.ffmpeg.ops import Source, build_plan, ffmpeg_prefix
from ffserve.media.streams import MediaInfo, parse_probe
from ffserve.wire.options import parse_options


class BaselineFailed(Exception):
    """Plain FFmpeg failed: the bench's command or media is wrong, not the service."""


@attrs.frozen
class Batch:
    """One batch of jobs run at some parallelism: each job's wall time, and the batch's."""

    latencies: tuple[float, ...]
    wall: float
    errors: tuple[str, ...] = ()


def probe(path: Path, ffprobe: str = "ffprobe") -> MediaInfo:
    """Probe `path` the way the service probes an upload (blocking)."""
    args = probe_args(ffprobe, path, LimitsConfig().max_pixels)
    out = subprocess.run(args, capture_output=True, check=True, timeout=60)
    return parse_probe(out.stdout)


def _wrote_output(workdir: Path) -> bool:
    return any(p.stat().st_size > 0 for p in workdir.iterdir())


@attrs.frozen
class PlainFFmpeg:
    """One operation on one input, as plain FFmpeg commands in throwaway directories."""

    operation: str
    options: dict[str, Any]
    source: Source
    root: Path  # where per-run directories are made
    ffmpeg: str = "ffmpeg"
    threads: int = 0
    cpu: int | None = None  # run under `taskset -c CPU` (the cluster scenario's baseline)

    @classmethod
    def for_job(
        cls,
        operation: str,
        options: dict[str, Any],
        path: Path,
        root: Path,
        *,
        ffmpeg: str = "ffmpeg",
        ffprobe: str = "ffprobe",
        threads: int = 0,
    ) -> PlainFFmpeg:
        """Probe `path` once and plan `operation` on it (blocking)."""
        source = Source(path, probe(path, ffprobe), path.name)
        return cls(operation, options, source, root, ffmpeg, threads)

    def command(self, workdir: Path) -> list[str]:
        """The service's FFmpeg command for this job, writing into `workdir`."""
        options = parse_options(self.operation, self.options)
        plan = build_plan(self.operation, options, [self.source], workdir)
        args = guard_inputs(plan.args, self.operation, LimitsConfig().max_pixels)
        pinned = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        return [*pinned, *ffmpeg_prefix(self.ffmpeg, self.threads), *args]

    async def run_one(self) -> float:
        """Run the command once; its wall time in seconds.

        Errors: BaselineFailed if FFmpeg fails or writes nothing.
        """
        workdir = Path(tempfile.mkdtemp(prefix="plain-", dir=self.root))
        try:
            args = self.command(workdir)
            start = trio.current_time()
            done = await trio.run_process(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                capture_stderr=True,
                check=False,
            )
            elapsed = trio.current_time() - start
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip()[-300:]
                raise BaselineFailed(f"plain FFmpeg exited {done.returncode}: {tail}")
            if not await trio.to_thread.run_sync(_wrote_output, workdir):
                raise BaselineFailed("plain FFmpeg wrote no output")
            return elapsed
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def run_batch(self, n: int, parallelism: int) -> Batch:
        """Run `n` times with at most `parallelism` at once."""
        latencies: list[float] = []
        limiter = trio.CapacityLimiter(max(1, parallelism))

        async def one() -> None:
            async with limiter:
                latencies.append(await self.run_one())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return Batch(tuple(latencies), trio.current_time() - start)
