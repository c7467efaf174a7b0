"""What the server spends during a scenario: CPU (its own and its children's) and RSS."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from bench.procstat import RssSampler
from bench.report import ScenarioResult
from bench.scenarios.context import Bench


@asynccontextmanager
async def server_usage(bench: Bench, result: ScenarioResult) -> AsyncIterator[None]:
    """Record the server's CPU and peak RSS over the block, and plain FFmpeg's CPU
    (the bench's reaped children: only plain FFmpeg runs are reaped during a scenario)."""
    before_plain = _children_cpu()
    watch = bench.target.watch
    if watch is None:
        result.server["note"] = "server pid not visible here: no CPU or RSS figures"
        yield
        result.metrics["plain_ffmpeg_cpu_s"] = round(_children_cpu() - before_plain, 3)
        return
    exact_peak = watch.reset_peak()
    before = watch.cpu()
    sampler = RssSampler(watch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.sample_every, 0.05)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
    after = watch.cpu()
    memory = watch.memory_kib()
    if before is not None and after is not None:
        used = after - before
        result.server["cpu_s"] = round(used.total, 3)
        result.server["python_cpu_s"] = round(used.own, 3)
        result.server["ffmpeg_ffprobe_cpu_s"] = round(used.children, 3)
    peak = memory.get("VmHWM") if exact_peak else sampler.peak_kib
    result.server["peak_rss_mib"] = round(max(peak or 0, sampler.peak_kib) / 1024, 1)
    result.server["peak_rss_source"] = "VmHWM" if exact_peak else "sampled VmRSS"
    result.server["rss_end_mib"] = round(memory.get("VmRSS", 0) / 1024, 1)
    result.metrics["plain_ffmpeg_cpu_s"] = round(_children_cpu() - before_plain, 3)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
