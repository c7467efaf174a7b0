"""One job's life: input -> probe -> plan -> worker slot -> FFmpeg -> verify -> deliver.

A job runs in its own task under its own `CancelScope`, owned by the `Job`. Cancelling
the job (cancel_job), its timeout, or the connection going away all end that scope;
FFmpeg is then terminated and reaped by `run_ffmpeg`, and the job's dir is removed by
`job_dir`, before the task returns. The steps live beside it: `intake` (input to disk),
`probing` (what the files hold), `ops` (the FFmpeg plan), `delivery` (results out).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import attrs
import trio

from ffserve.errors import ErrorCode, FFserveError, JobError, ProtocolError
from ffserve.ffmpeg.ops import (
    METADATA_ONLY,
    Plan,
    Source,
    build_plan,
    ffmpeg_prefix,
    inputs_expected,
)
from ffserve.ffmpeg.probe import probe_input
from ffserve.ffmpeg.process import ProcessFailed, run_ffmpeg, summarize
from ffserve.ffmpeg.progress import ProgressParser, Throttle
from ffserve.jobs.services import Services
from ffserve.jobs.state import JobState, check_transition
from ffserve.jobs.workspace import job_dir
from ffserve.media.metadata import full_metadata
from ffserve.transfer.delivery import LastMessage, deliver
from ffserve.transfer.intake import receive_input
from ffserve.wire.binary import UploadPart
from ffserve.wire.messages import (
    Completed,
    Delivery,
    Error,
    Input,
    OutputTarget,
    Progress,
    UploadInput,
    UrlInput,
)
from ffserve.wire.options import Options
from ffserve.wire.outbox import Outbox

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25
CHUNKS_IN_FLIGHT = 2
IMAGE_HEADERS = frozenset({"png", "jpg"})
IMAGE_HEADER_BYTES = 256 * 1024  # room for EXIF and other segments before a JPEG's frame header


@attrs.define(eq=False)
class Job:
    job_id: str
    operation: str
    options: Options
    input: Input
    owner: object
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    state: JobState = JobState.RECEIVING
    cancel_requested: bool = False
    failing: bool = False
    delivery: Delivery | None = None
    output: OutputTarget | None = None
    reserved_bytes: int = 0
    inputs_total: int = attrs.field(init=False)  # files the job takes, URL included
    uploads_received: int = 0
    uploads_closed: bool = False  # input complete (or the job ended): frames are refused
    _uploads: tuple[trio.MemorySendChannel[UploadPart], trio.MemoryReceiveChannel[UploadPart]] = (
        attrs.field(init=False)
    )

    def __attrs_post_init__(self) -> None:
        self.inputs_total = inputs_expected(self.options)
        # Uploads wait in memory only a chunk or two deep (a v1 upload: a couple of the
        # pieces it arrives in): the reader waits for the job to write the previous one
        # to disk, so no uploader can make the server hold more than that.
        self._uploads = trio.open_memory_channel[UploadPart](CHUNKS_IN_FLIGHT)

    @property
    def uploads_expected(self) -> int:
        # A URL is the first input; any others are uploads.
        return self.inputs_total - (1 if isinstance(self.input, UrlInput) else 0)

    @property
    def chunked(self) -> bool:
        return isinstance(self.input, UploadInput) and self.input.files is not None

    def advance(self, state: JobState) -> None:
        self.state = check_transition(self.state, state)

    def finish(self) -> None:
        """Mark the job ended, just before its last message is queued: a client that
        reads that message may reuse the job id at once, before this task has unwound."""
        self.state = JobState.DONE

    def begin_upload(self) -> None:
        """A binary frame for this job has begun; its pieces follow through `feed_upload`.

        Errors: ProtocolError(INVALID_BINARY) when the job is not waiting for an upload.
        """
        if (
            self.state is not JobState.RECEIVING
            or self.uploads_closed
            or (not self.chunked and self.uploads_received >= self.uploads_expected)
        ):
            raise ProtocolError(
                f"job {self.job_id!r} is not waiting for an upload"
                + ("" if self.uploads_expected else " (its input is a URL)"),
                code=ErrorCode.INVALID_BINARY,
                job_id=self.job_id,
            )
        if not self.chunked:
            self.uploads_received += 1

    async def feed_upload(self, part: UploadPart) -> bool:
        """Hand the job a piece of its frame; waits while earlier ones are being written.
        False once the job takes no more (it ended, and said why): drop the rest."""
        try:
            await self._uploads[0].send(part)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def next_upload(self) -> UploadPart:
        return await self._uploads[1].receive()

    def frame_waiting(self) -> bool:
        """Whether a frame is queued (taking it): used to spot bytes past the announced end."""
        try:
            self._uploads[1].receive_nowait()
        except trio.WouldBlock:
            return False
        return True

    def close_uploads(self) -> None:
        """Input complete: frames still queued or arriving from now on are refused."""
        self.uploads_closed = True
        self._uploads[1].close()

    def cancel(self) -> None:
        self.cancel_requested = True
        self.scope.cancel()


async def run_job(job: Job, services: Services, outbox: Outbox) -> None:
    """Run `job` to the end, reporting the outcome to the client. Never raises FFserveError.

    Cancellation: a client cancel is reported as JOB_CANCELLED; any other cancellation
    (disconnect, shutdown) propagates after cleanup.
    """
    metrics = services.metrics
    metrics.count("jobs_started")
    try:
        with job.scope:
            try:
                await _work(job, services, outbox)
                metrics.count("jobs_completed")
            except FFserveError as exc:
                metrics.count("jobs_failed")
                job.finish()
                await outbox.send(Error(exc.code, exc.message, job.job_id, exc.details))
            except Exception:
                # Disk full, a bug: the server's fault, so it costs this job, never the
                # connection. The outbox itself may be why we are here (writer gone).
                log.exception("job %r of %s failed unexpectedly", job.job_id, job.operation)
                metrics.count("jobs_failed")
                job.finish()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await outbox.send(
                        Error(
                            ErrorCode.INTERNAL_ERROR,
                            "the server could not complete this job",
                            job.job_id,
                        )
                    )
        if job.scope.cancelled_caught and job.cancel_requested:
            metrics.count("jobs_cancelled")
            job.finish()
            await outbox.send(Error(ErrorCode.JOB_CANCELLED, "job cancelled", job.job_id))
    finally:
        job.close_uploads()  # wakes a reader blocked handing this job a chunk
        job.state = JobState.DONE


async def _work(job: Job, services: Services, outbox: Outbox) -> None:
    """The job's steps. Its last message goes out after its dir is removed, so a client
    that has seen the end of a job never finds its files still on the server."""
    final = await _steps(job, services, outbox)
    job.finish()
    if isinstance(final, Completed):
        await outbox.send(final)
    else:
        await outbox.send_reserved(final)  # its slot was taken before it was read


async def _steps(job: Job, services: Services, outbox: Outbox) -> LastMessage:
    config = services.config
    async with job_dir(services.workspace) as workdir:
        try:
            try:
                with trio.fail_after(config.jobs.input_timeout_s):
                    paths = await receive_input(job, services, outbox, workdir)
            except trio.TooSlowError:
                raise JobError(
                    f"input not complete within {config.jobs.input_timeout_s:g} s",
                    code=ErrorCode.TIMEOUT,
                ) from None
            # Probing is the server's work, outside the client's input deadline, but bounded:
            # a file built to keep ffprobe busy must not hold a probe slot for long.
            try:
                with trio.fail_after(config.jobs.timeout_s):
                    sources = [
                        Source(path, await probe_input(services, path), name)
                        for path, name in paths
                    ]
            except trio.TooSlowError:
                raise JobError(
                    f"reading the input's metadata took longer than {config.jobs.timeout_s:g} s",
                    code=ErrorCode.TIMEOUT,
                ) from None
            if job.operation in METADATA_ONLY:
                job.advance(JobState.QUEUED)
                job.advance(JobState.DELIVERING)
                metadata = full_metadata(sources[0].info)
                return Completed(job.job_id, metadata, "none", f"{job.operation} completed")
            plan = build_plan(job.operation, job.options, sources, workdir)
            job.advance(JobState.QUEUED)
            outbox.offer(Progress(job.job_id, 0.0, "queued"))
            async with services.pool.slot(job.owner):
                job.advance(JobState.RUNNING)
                await _run(job, services, outbox, plan, workdir)
            job.advance(JobState.DELIVERING)
            return await deliver(job, services, outbox, plan)
        except Exception:
            # The job has failed: from here on a cancel_job cannot change its outcome,
            # even while its files are being removed (its id stays taken until its error
            # is queued, so the error cannot follow another job's ack for the same id).
            job.failing = True
            raise


async def _run(job: Job, services: Services, outbox: Outbox, plan: Plan, workdir: Path) -> None:
    config = services.config
    parser = ProgressParser(plan.expected_duration)
    throttle = Throttle(PROGRESS_INTERVAL_S)
    outbox.offer(Progress(job.job_id, 0.0, plan.stage))
    throttle.ready(trio.current_time())

    def report(percentage: float) -> None:
        if throttle.ready(trio.current_time()):
            outbox.offer(Progress(job.job_id, percentage, plan.stage))

    prefix = ffmpeg_prefix(config.ffmpeg.ffmpeg, config.ffmpeg.threads)
    for path, text in plan.files:
        await trio.Path(path).write_text(text, encoding="utf-8")
    try:
        with trio.fail_after(config.jobs.timeout_s):
            for step in plan.before:
                await run_ffmpeg(
                    [*prefix, *step],
                    parser=ProgressParser(None),
                    on_progress=lambda _: None,
                    grace=config.ffmpeg.kill_grace_s,
                    cwd=str(workdir),
                    niceness=config.ffmpeg.niceness,
                )
            await run_ffmpeg(
                [*prefix, *plan.args],
                parser=parser,
                on_progress=report,
                grace=config.ffmpeg.kill_grace_s,
                cwd=str(workdir),
                niceness=config.ffmpeg.niceness,
            )
    except trio.TooSlowError:
        raise JobError(
            f"job took longer than {config.jobs.timeout_s:g} s", code=ErrorCode.TIMEOUT
        ) from None
    except ProcessFailed as exc:
        summary = summarize(exc.stderr_tail.encode(), scrub=[str(workdir), str(services.workspace)])
        raise JobError(
            f"FFmpeg could not process the input: {summary}"
            if summary
            else "FFmpeg could not process the input"
        ) from None
    await outbox.send(Progress(job.job_id, 100.0, plan.stage))
