"""One job's life: input -> probe -> plan -> worker slot -> FFmpeg -> verify -> deliver.

A job runs in its own task under its own `CancelScope`, owned by the `Job`. Cancelling
the job (cancel_job), its timeout, or the connection going away all end that scope;
FFmpeg is then terminated and reaped by `run_ffmpeg`, and the job's dir is removed by
`job_dir`, before the task returns. Each step tells the job's state machine what
happened; the steps' work lives below: `transfer` (input to disk, results out),
`ffmpeg` (probe, plan, run, verify).

Every job ends with exactly one last message, sent in one place (`run_job`), after its
files are removed: its result, its error, or JOB_CANCELLED; or none, when the connection
or the server went away.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from ffserve import events
from ffserve.errors import ErrorCode, FFserveError, JobError
from ffserve.ffmpeg.arguments import guard_inputs
from ffserve.ffmpeg.budget import check_budget
from ffserve.ffmpeg.ops import METADATA_ONLY, Plan, Source, build_plan, ffmpeg_prefix
from ffserve.ffmpeg.process import ProcessFailed, run_ffmpeg, summarize
from ffserve.ffmpeg.progress import ProgressParser, Throttle
from ffserve.ffmpeg.sandbox import ChildLimits
from ffserve.ffmpeg.verify import verify_outputs
from ffserve.ffmpeg.warm import Warm
from ffserve.jobs.admission import Ticket
from ffserve.jobs.job import Job
from ffserve.jobs.services import Services
from ffserve.jobs.state import JobEvent, JobState
from ffserve.jobs.workspace import job_dir
from ffserve.media.metadata import full_metadata
from ffserve.transfer.delivery import LastMessage, completion, deliver
from ffserve.transfer.intake import receive_input
from ffserve.wire.messages import Completed, Error, Progress, UploadInput
from ffserve.wire.outbox import Outbox

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25
# How FFmpeg and its libraries (libav*, x264, ...) say an allocation failed: under
# RLIMIT_AS that is the job outgrowing its memory limit.
OUT_OF_MEMORY = re.compile(r"Cannot allocate memory|malloc of size \d+ failed|[Oo]ut of memory")


async def run_job(job: Job, ticket: Ticket, services: Services, outbox: Outbox) -> None:
    """Run `job` to the end, reporting the outcome to the client. Never raises FFserveError.

    Whatever the outcome, the job is counted once in the metrics and logged in one line
    (`job_end`) when it ends.

    Cancellation: a client cancel is reported as JOB_CANCELLED, a stop at the drain's
    deadline as SHUTTING_DOWN; any other cancellation (disconnect, a second signal)
    propagates after cleanup.
    """
    began = trio.current_time()
    outcome, code = "aborted", None  # unless the client is told otherwise
    try:
        last: LastMessage | Error | None = None
        with job.scope:
            try:
                last = await _steps(job, ticket, services, outbox)
            except FFserveError as exc:
                job.process(JobEvent.FAILED)
                last = Error(exc.code, exc.message, job.job_id, exc.details)
            except Exception:
                # Disk full, a bug: the server's fault, so it costs this job, never the
                # connection.
                log.exception("job %r of %s failed unexpectedly", job.job_id, job.operation)
                job.process(JobEvent.FAILED)
                last = Error(
                    ErrorCode.INTERNAL_ERROR, "the server could not complete this job", job.job_id
                )
        # Only `Job.cancel` (the client asked) and `Job.shut_down` (the drain's deadline
        # passed) cancel this scope.
        stopped = (JobState.CANCELLING, JobState.STOPPING)
        assert not job.scope.cancelled_caught or job.state in stopped, job.state
        if job.state is JobState.CANCELLING:
            # Cancelled is the outcome, whatever the job ran into before it noticed.
            last = Error(ErrorCode.JOB_CANCELLED, "job cancelled", job.job_id)
        elif last is None:
            # Stopped by the drain before it had its result (one that had it keeps it).
            last = Error(
                ErrorCode.SHUTTING_DOWN,
                "the server shut down before this job finished; retry it elsewhere",
                job.job_id,
            )
        # The job's id is free from here: a client that reads this message may reuse it
        # at once, before this task has unwound.
        job.process(JobEvent.LAST_WORD)
        # A closed outbox means the writer (the client) is gone: nobody is left to tell.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            if isinstance(last, Completed | Error):
                await outbox.send(last)
            else:
                await last.send()  # its outbox place was taken before it was read
            if isinstance(last, Error):
                code = last.code
                outcome = "cancelled" if code == ErrorCode.JOB_CANCELLED else "failed"
            else:
                outcome = "completed"
                record = job.record
                if record.delivery_began is not None:
                    record.delivery_s = trio.current_time() - record.delivery_began
    finally:
        job.end()
        _report(job, services, outcome, code, trio.current_time() - began)


def _report(job: Job, services: Services, outcome: str, code: str | None, seconds: float) -> None:
    """Count the ended job and log its one line (no paths: names are the client's own)."""
    record = job.record
    services.metrics.job_ended(job.operation, outcome, code, seconds, record)
    events.record(
        "job_end",
        job_id=job.job_id,
        connection=job.connection_id,
        operation=job.operation,
        outcome=outcome,
        code=code,
        seconds=round(seconds, 3),
        bytes_in=record.input_bytes,
        bytes_out=record.output_bytes if outcome == "completed" else 0,
        inputs=record.input_names,
    )


async def _steps(job: Job, ticket: Ticket, services: Services, outbox: Outbox) -> LastMessage:
    """The job's steps, in its dir; returns its last message, unsent, once the dir is gone
    (so a client that has seen the end of a job never finds its files still on the server).
    """
    config = services.config
    record = job.record
    async with (
        job_dir(services.workspace) as workdir,
        _warm(services, job.operation, workdir) as warm,
    ):
        try:
            began = trio.current_time()
            try:
                with trio.fail_after(config.jobs.input_timeout_s):
                    paths = await receive_input(
                        job.job_id,
                        job.input,
                        job.inputs_total,
                        job.inbox,
                        workdir,
                        outbox=outbox,
                        http=services.http,
                        config=config,
                        disk=ticket,
                    )
            except trio.TooSlowError:
                raise JobError(
                    f"input not complete within {config.jobs.input_timeout_s:g} s",
                    code=ErrorCode.TIMEOUT,
                ) from None
            record.input_names = [name for _, name in paths]
            record.input_bytes = sum([(await trio.Path(path).stat()).st_size for path, _ in paths])
            if isinstance(job.input, UploadInput):
                record.upload_s = trio.current_time() - began
            if warm is not None:
                await warm.arm()  # its sandbox was built while the input arrived
            overrun = job.input_complete()
            ticket.input_done()  # from its client's quota into the shared queue
            await trio.lowlevel.checkpoint_if_cancelled()
            if overrun and job.chunked:
                raise JobError("upload runs past its announced size", code=ErrorCode.TOO_LARGE)
            # Probing is the server's work, outside the client's input deadline, but bounded:
            # a file built to keep ffprobe busy must not hold a probe slot for long.
            began = trio.current_time()
            try:
                with trio.fail_after(config.jobs.timeout_s):
                    sources = [
                        Source(path, await services.prober.probe_input(path), name)
                        for path, name in paths
                    ]
            except trio.TooSlowError:
                raise JobError(
                    f"reading the input's metadata took longer than {config.jobs.timeout_s:g} s",
                    code=ErrorCode.TIMEOUT,
                ) from None
            record.probe_s = trio.current_time() - began
            if job.operation in METADATA_ONLY:
                job.process(JobEvent.METADATA_ONLY)
                await trio.lowlevel.checkpoint_if_cancelled()  # a cancel meanwhile
                metadata = [full_metadata(sources[0].info)]
                return completion(job.job_id, job.operation, metadata, "none")
            plan = build_plan(job.operation, job.options, sources, workdir)
            check_budget(plan, sources, config.limits)
            job.process(JobEvent.PLANNED)
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancel meanwhile
            outbox.offer(Progress(job.job_id, 0.0, "queued"))
            began = trio.current_time()
            async with services.pool.slot(job.owner):
                record.queue_wait_s = trio.current_time() - began
                job.process(JobEvent.SLOT_TAKEN)
                await trio.lowlevel.checkpoint_if_cancelled()  # a cancel meanwhile
                began = trio.current_time()
                try:
                    await _run(job, services, outbox, plan, workdir, warm)
                finally:
                    record.ffmpeg_s = trio.current_time() - began
                    ticket.ran(record.ffmpeg_s)
            job.process(JobEvent.FFMPEG_EXITED)
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancel meanwhile
            # Outside the slot: a client that stops reading holds up its own job only
            # (and only until its connection's send timeout drops it).
            eta = 0.0 if job.progress_detail else None  # unset fields are not sent
            await outbox.send(Progress(job.job_id, 100.0, plan.stage, eta_s=eta))
            outputs = await verify_outputs(
                services.prober, plan.outputs, plan.promise, config.max_output_bytes
            )
            job.process(JobEvent.VERIFIED)
            record.output_bytes = sum(output.size for output in outputs)
            record.delivery_began = trio.current_time()
            return await deliver(
                job.job_id,
                job.operation,
                outputs,
                delivery=job.delivery,
                target=job.output,
                outbox=outbox,
                http=services.http,
                config=config,
            )
        except Exception:
            # The job has failed: from here on a cancel_job cannot change its outcome,
            # even while its files are being removed (its id stays taken until its error
            # is queued, so the error cannot follow another job's ack for the same id).
            job.process(JobEvent.FAILED)
            raise


def _warm(
    services: Services, operation: str, workdir: Path
) -> contextlib.AbstractAsyncContextManager[Warm | None]:
    """A sandbox built for the job's FFmpeg while its input arrives (`ffserve.ffmpeg.warm`)."""
    if operation in METADATA_ONLY:
        return contextlib.nullcontext()
    return services.warm.open(workdir)


async def _run(
    job: Job, services: Services, outbox: Outbox, plan: Plan, workdir: Path, warm: Warm | None
) -> None:
    config = services.config
    parser = ProgressParser(plan.expected_duration)
    throttle = Throttle(PROGRESS_INTERVAL_S)
    outbox.offer(Progress(job.job_id, 0.0, plan.stage))
    throttle.ready(trio.current_time())

    def report(percentage: float) -> None:
        if not throttle.ready(trio.current_time()):
            return
        # The extension's fields only for a job that asked; unset fields are not sent.
        detail = job.progress_detail
        eta, speed = (parser.eta_s(), parser.speed) if detail else (None, None)
        outbox.offer(Progress(job.job_id, percentage, plan.stage, eta_s=eta, speed=speed))

    prefix = ffmpeg_prefix(config.ffmpeg.ffmpeg, config.ffmpeg.threads)
    max_pixels = config.limits.max_pixels

    async def ffmpeg(
        args: Sequence[str],
        parser: ProgressParser,
        on_progress: Callable[[float], None],
        warm: Warm | None = None,
    ) -> None:
        await run_ffmpeg(
            [*prefix, *guard_inputs(args, job.operation, max_pixels)],
            confinement=services.confinement,
            workdir=workdir,
            parser=parser,
            on_progress=on_progress,
            grace=config.ffmpeg.kill_grace_s,
            warm=warm,
        )

    for path, text in plan.files:
        await trio.Path(path).write_text(text, encoding="utf-8")
    try:
        with trio.fail_after(config.jobs.timeout_s):
            for step in plan.before:
                # The first FFmpeg of the job takes the warm sandbox.
                await ffmpeg(step, ProgressParser(None), lambda _: None, warm)
            try:
                await ffmpeg(plan.args, parser, report, warm)
            except ProcessFailed as exc:
                fallback = plan.fallback
                if fallback is None or plan.fallback_on not in exc.stderr_tail:
                    raise
                # The plan's last resort, in the same slot and under the same deadline.
                plan = fallback
                outbox.offer(Progress(job.job_id, parser.percentage, plan.stage))
                await ffmpeg(plan.args, parser, report)
    except trio.TooSlowError:
        raise JobError(
            f"job took longer than {config.jobs.timeout_s:g} s", code=ErrorCode.TIMEOUT
        ) from None
    except ProcessFailed as exc:
        scrub = [str(workdir), str(services.workspace)]
        raise ffmpeg_failure(exc, services.confinement.limits, scrub) from None


def ffmpeg_failure(exc: ProcessFailed, limits: ChildLimits, scrub: list[str]) -> JobError:
    """What an FFmpeg that failed tells the client: a limit it ran into, by name, or a
    short summary of its own last words without the server's paths (`scrub`)."""
    if exc.signal == signal.SIGXFSZ:
        return JobError(
            f"an output passed the {limits.file_bytes}-byte output limit while FFmpeg wrote it",
            code=ErrorCode.TOO_LARGE,
            details={"limit": "output_bytes", "max_output_bytes": limits.file_bytes},
        )
    # A job the server stops is cancelled or timed out before this is asked, so a signal
    # FFmpeg trapped came from the kernel: in the sandbox (its own PID namespace and
    # session) nothing else can signal it.
    if exc.signal == signal.SIGXCPU or exc.trapped_signal:
        return JobError(
            f"the job used more than {limits.cpu_s} s of CPU time", code=ErrorCode.TIMEOUT
        )
    if OUT_OF_MEMORY.search(exc.stderr_tail):
        return JobError(
            f"the job needed more than the {limits.memory_bytes // (1024 * 1024)} MiB of memory "
            "one FFmpeg process may use",
            code=ErrorCode.TOO_LARGE,
            details={"limit": "memory"},
        )
    summary = summarize(exc.stderr_tail.encode(), scrub=scrub)
    return JobError(
        f"FFmpeg could not process the input: {summary}"
        if summary
        else "FFmpeg could not process the input"
    )
