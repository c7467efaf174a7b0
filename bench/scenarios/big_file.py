"""Issue 4's big file: chunked upload, stream copy, chunked delivery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import trio

from bench.chunked import Outcome, run_in_process, sha256_file
from bench.media import high_bitrate_video
from bench.pinger import Phase, open_pinger
from bench.report import FAILED, NOT_RUN, TIMED_OUT, Goal, ScenarioResult
from bench.scenarios.context import Bench
from bench.scenarios.figures import MIB, ms, number, rounded
from bench.scenarios.usage import server_usage
from bench.stats import percentile

# What the big file asks for: a stream copy, whose output is as big as its input.
CONVERT_COPY: dict[str, Any] = {"target_format": "mkv", "stream_copy": True}
BIG_CHUNK = MIB  # the client reads, and the server delivers, 1 MiB at a time


async def big_file(bench: Bench, result: ScenarioResult) -> None:
    """Issue 4's big file: a chunked upload of a high-bitrate video (paced by the server's
    `upload_progress`), a stream copy into MKV (an output as big as the input), and a
    chunked delivery written to disk and checked against `output_metadata.sha256`.

    The client holds a window of chunks, never the file. A side connection pings all along;
    plain FFmpeg does the same stream copy on local files before and after the service run.
    """
    sizes = bench.sizes
    mib = sizes.big_file_mb
    result.params.update(
        operation="convert",
        options=json.dumps(CONVERT_COPY),
        file_mib=mib,
        chunk_kib=BIG_CHUNK // 1024,
        window_chunks=sizes.chunk_window,
        ping_interval_ms=sizes.ping_interval_s * 1000,
    )
    upload_goal = Goal("chunked upload MB/s (issue 4)", None, ">=", 250, "MB/s")
    ping_goal = Goal("side ping p99, big chunked upload", None, "<", 20, "ms")
    rss_goal = Goal("server peak RSS, big file (issue 4: at 300 MB)", None, "<", 150, "MiB")
    result.goals += [upload_goal, ping_goal, rss_goal]
    if "chunked" not in bench.target.features:
        result.status = NOT_RUN
        result.reason = (
            "chunked transfer not available: the server's /health does not list 'chunked' "
            "in `features`"
        )
        return
    directory = bench.scratch.parent / "big_file"
    directory.mkdir(exist_ok=True)
    try:
        await _big_file(bench, result, directory, upload_goal, ping_goal, rss_goal)
    finally:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))


async def _big_file(
    bench: Bench,
    result: ScenarioResult,
    directory: Path,
    upload_goal: Goal,
    ping_goal: Goal,
    rss_goal: Goal,
) -> None:
    sizes = bench.sizes
    # The media, its checksum (announced in start_job) and the plain FFmpeg plan: not timed.
    made = trio.current_time()
    path = await trio.to_thread.run_sync(
        lambda: high_bitrate_video(directory / "big.mkv", sizes.big_file_mb, ffmpeg=bench.ffmpeg)
    )
    digest = await trio.to_thread.run_sync(sha256_file, path)
    size = (await trio.Path(path).stat()).st_size
    result.params.update(
        input=path.name,
        file_bytes=size,
        media_generation_s=round(trio.current_time() - made, 2),
    )
    plain = await bench.plain("convert", CONVERT_COPY, path)
    result.params["plain_command"] = " ".join(plain.command(Path("<dir>")))
    plain_runs: list[float] = []
    job = Outcome(error="not started")
    async with open_pinger(
        bench.target.url, sizes.ping_interval_s, sizes.scenario_timeout_s + 60
    ) as pings:
        with trio.move_on_after(sizes.scenario_timeout_s) as deadline:
            plain_runs.append(await plain.run_one())
            pings.begin("idle")
            await trio.sleep(1.0)
            pings.end()
            watch = bench.target.watch
            rss_before = watch.memory_kib().get("VmRSS") if watch else None
            if rss_before is not None:
                # The server keeps memory from earlier scenarios: the peak is read against it.
                result.server["rss_before_mib"] = round(rss_before / 1024, 1)
            async with server_usage(bench, result):
                job = await run_in_process(
                    bench.target.url,
                    path,
                    directory / "delivered.mkv",
                    digest,
                    chunk_bytes=BIG_CHUNK,
                    window=sizes.chunk_window,
                    job_limit_s=sizes.job_timeout_s,
                )
            # The delivered file stays on disk for this run: the same disk load as before.
            plain_runs.append(await plain.run_one())
        await trio.sleep(2 * sizes.ping_interval_s)  # the last pongs' lines
    result.metrics.pop("plain_ffmpeg_cpu_s", None)  # plain runs are outside server_usage
    for label, start, end in (
        ("upload", job.upload_started, job.upload_done),
        ("processing", job.upload_done, job.completed),
        ("delivery", job.completed, job.delivered),
        ("whole job", job.submitted, job.delivered or job.completed),
    ):
        if start is not None and end is not None:
            pings.phases.append(Phase(label, start, end))
    if deadline.cancelled_caught:
        result.status, result.reason = TIMED_OUT, f"stopped after {sizes.scenario_timeout_s:g} s"
    elif job.error is not None:
        result.status, result.reason = FAILED, f"the service job failed: {job.error}"
    elif job.checksum_ok is not True:
        result.status = FAILED
        result.reason = (
            f"delivered sha256 {job.output_sha256} != completed.output_metadata.sha256 "
            f"{job.output_metadata.get('sha256')}"
        )
    if job.latency is not None:
        result.series["service (start_job to delivered)"] = [job.latency]
    result.series["plain ffmpeg (local files)"] = plain_runs
    result.compare = ("service (start_job to delivered)", "plain ffmpeg (local files)")
    for label in ("idle", "upload", "processing", "delivery", "whole job"):
        result.series[f"side ping ({label})"] = pings.during(label)
    _big_file_metrics(result, job, plain_runs)
    upload_goal.value = number(result.metrics.get("upload_mb_per_s"))
    side = result.summary("side ping (upload)")
    ping_goal.value = ms(side.p99 if side else None)
    rss_goal.value = number(result.server.get("peak_rss_mib"))
    before, peak = number(result.server.get("rss_before_mib")), rss_goal.value
    if before is not None and peak is not None:
        result.metrics["server_rss_growth_mib"] = round(peak - before, 1)
        result.notes.append(
            f"the server's RSS was {before:g} MiB before this scenario (kept from earlier "
            f"ones); its peak during the big file was {peak - before:.1f} MiB above that"
        )
    if side is None or side.n < 10:
        result.notes.append(
            f"only {side.n if side else 0} side pings fell within the upload: "
            "too few for a meaningful p99 (use a bigger --big-mb)"
        )


def _big_file_metrics(result: ScenarioResult, job: Outcome, plain_runs: list[float]) -> None:
    metrics = result.metrics

    def span(start: float | None, end: float | None) -> float | None:
        return end - start if start is not None and end is not None else None

    upload_s = span(job.upload_started, job.upload_done)
    delivery_s = span(job.completed, job.delivered)
    # MB = 10**6 bytes, as in issue 4's 250 MB/s.
    metrics["upload_s"] = rounded(upload_s)
    metrics["upload_mb_per_s"] = rounded(_mb_per_s(job.acked_bytes, upload_s), 1)
    metrics["delivery_s"] = rounded(delivery_s)
    metrics["delivery_mb_per_s"] = rounded(_mb_per_s(job.delivered_bytes, delivery_s), 1)
    metrics["input_check_probe_s"] = rounded(span(job.upload_done, job.queued))
    metrics["wait_for_worker_s"] = rounded(span(job.queued, job.running))
    metrics["service_ffmpeg_s"] = rounded(span(job.running, job.processed))
    metrics["output_verify_s"] = rounded(span(job.processed, job.completed))
    metrics["job_total_s"] = rounded(job.latency)
    metrics["plain_ffmpeg_s"] = rounded(percentile(plain_runs, 50) if plain_runs else None)
    metrics["uploaded_bytes"] = job.acked_bytes
    metrics["delivered_bytes"] = job.delivered_bytes
    announced = job.output_metadata.get("size_bytes")
    metrics["output_size_bytes"] = announced if type(announced) is int else None
    metrics["sha256_verified"] = job.checksum_ok
    metrics["upload_progress_messages"] = job.progress_messages
    metrics["max_unacked_chunks"] = job.max_unacked_chunks
    metrics["delivery_chunks"] = job.delivery_chunks
    metrics["window_waits"] = job.window_waits
    metrics["stage"] = job.stage
    metrics["client_peak_rss_mib"] = job.client_peak_rss_mib
    metrics["client_cpu_s"] = job.client_cpu_s
    metrics["job_error"] = job.error


def _mb_per_s(size: int, seconds: float | None) -> float | None:
    return size / seconds / 1e6 if seconds and seconds > 0 and size else None
