"""One job's life: input -> probe -> plan -> worker slot -> FFmpeg -> verify -> deliver.

A job runs in its own task under its own `CancelScope`, owned by the `Job`. Cancelling
the job (cancel_job), its timeout, or the connection going away all end that scope;
FFmpeg is then terminated and reaped by `run_ffmpeg`, and the job's dir is removed by
`job_dir`, before the task returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ffserve.errors import ErrorCode, FFserveError, JobError, ProtocolError
from ffserve.fetch import FetchPolicy, fetch_to_file
from ffserve.framing import BinaryFrame, encode_header
from ffserve.imageheader import NotAnImage, image_info
from ffserve.isobmff import probe_isobmff
from ffserve.media import MediaInfo, full_metadata, output_metadata, parse_probe, probe_args
from ffserve.messages import (
    Completed,
    Delivery,
    Error,
    FileSpec,
    Input,
    OutputTarget,
    Progress,
    UploadInput,
    UploadProgress,
    UrlInput,
)
from ffserve.ops import METADATA_ONLY, Plan, Source, build_plan, ffmpeg_prefix, inputs_expected
from ffserve.options import Options
from ffserve.outbox import Outbox
from ffserve.process import ProcessFailed, run_capture, run_ffmpeg, summarize
from ffserve.progress import ProgressParser, Throttle
from ffserve.publish import put_file
from ffserve.services import Services
from ffserve.state import JobState, check_transition
from ffserve.upload import UploadState
from ffserve.workspace import job_dir

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "gif": "image/gif",
    "png": "image/png",
    "jpg": "image/jpeg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}
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
    delivery: Delivery | None = None
    output: OutputTarget | None = None
    reserved_bytes: int = 0
    uploads_expected: int = 0
    uploads_received: int = 0
    _uploads: tuple[trio.MemorySendChannel[BinaryFrame], trio.MemoryReceiveChannel[BinaryFrame]] = (
        attrs.field(init=False)
    )

    def __attrs_post_init__(self) -> None:
        expected = inputs_expected(self.options)
        if isinstance(self.input, UrlInput):
            expected -= 1  # the URL is the first input; any others are uploads
        self.uploads_expected = expected
        # Uploads wait in memory only a frame or two deep: the reader waits for the job to
        # write the previous one to disk, so neither a fast chunked uploader nor a
        # 50-file v1 concat can make the server hold more than that.
        depth = CHUNKS_IN_FLIGHT if self.chunked else 1
        self._uploads = trio.open_memory_channel[BinaryFrame](depth)

    @property
    def chunked(self) -> bool:
        return isinstance(self.input, UploadInput) and self.input.files is not None

    def advance(self, state: JobState) -> None:
        self.state = check_transition(self.state, state)

    def finish(self) -> None:
        """Mark the job ended, just before its last message is queued: a client that
        reads that message may reuse the job id at once, before this task has unwound."""
        self.state = JobState.DONE

    async def accept_upload(self, frame: BinaryFrame) -> None:
        """Route a binary frame to this job; waits while earlier frames are being written.

        Errors: ProtocolError(INVALID_BINARY) when the job is not waiting for an upload.
        """
        refused = ProtocolError(
            f"job {self.job_id!r} is not waiting for an upload"
            + ("" if self.uploads_expected else " (its input is a URL)"),
            code=ErrorCode.INVALID_BINARY,
            job_id=self.job_id,
        )
        if self.state is not JobState.RECEIVING:
            raise refused
        if not self.chunked:
            if self.uploads_received >= self.uploads_expected:
                raise refused
            self.uploads_received += 1
        try:
            await self._uploads[0].send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise refused from None

    def close_uploads(self) -> None:
        """Input complete: frames still queued or arriving from now on are refused."""
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
    config = services.config
    async with job_dir(services.workspace) as workdir:
        try:
            with trio.fail_after(config.jobs.input_timeout_s):
                paths = await _receive_input(job, services, outbox, workdir)
        except trio.TooSlowError:
            raise JobError(
                f"input not complete within {config.jobs.input_timeout_s:g} s",
                code=ErrorCode.TIMEOUT,
            ) from None
        # Probing is the server's work, outside the client's input deadline.
        sources = [Source(path, await probe(services, path), name) for path, name in paths]
        if job.operation in METADATA_ONLY:
            job.advance(JobState.QUEUED)
            job.advance(JobState.DELIVERING)
            job.finish()
            await outbox.send(
                Completed(
                    job.job_id, full_metadata(sources[0].info), "none", f"{job.operation} completed"
                )
            )
            return
        plan = build_plan(job.operation, job.options, sources, workdir)
        job.advance(JobState.QUEUED)
        outbox.offer(Progress(job.job_id, 0.0, "queued"))
        async with services.pool.slot(job.owner):
            job.advance(JobState.RUNNING)
            await _run(job, services, outbox, plan, workdir)
        job.advance(JobState.DELIVERING)
        await _deliver(job, services, outbox, plan)


async def _receive_input(
    job: Job, services: Services, outbox: Outbox, workdir: Path
) -> list[tuple[Path, str]]:
    """Every input file on disk, as (path, client's name), in order."""
    config = services.config
    total = inputs_expected(job.options)
    paths = []
    if isinstance(job.input, UrlInput):
        path = workdir / ("input_00" if total > 1 else "input")
        policy = FetchPolicy(
            config.security.allow_private_urls,
            config.max_upload_bytes,
            config.security.url_max_redirects,
        )
        await fetch_to_file(services.http, job.input.url, path, policy)
        paths.append((path, httpx.URL(job.input.url).path.rsplit("/", 1)[-1]))
    files = job.input.files if isinstance(job.input, UploadInput) else None
    while len(paths) < total:
        path = workdir / (f"input_{len(paths):02d}" if total > 1 else "input")
        if files is not None:
            name = await _receive_chunked(job, services, outbox, path, len(paths), files)
        else:
            name = await _receive_whole(job, services, path)
        paths.append((path, name))
    overrun = files is not None and _frame_waiting(job)
    job.close_uploads()
    if overrun:
        raise JobError("upload runs past its announced size", code=ErrorCode.TOO_LARGE)
    return paths


def _frame_waiting(job: Job) -> bool:
    try:
        job._uploads[1].receive_nowait()
    except trio.WouldBlock:
        return False
    return True


async def _receive_whole(job: Job, services: Services, path: Path) -> str:
    """A v1 upload: one binary frame holds the whole file."""
    limit = services.config.max_upload_bytes
    frame = await job._uploads[1].receive()
    if len(frame.payload) > limit:
        raise JobError(
            f"upload is {len(frame.payload)} bytes; the limit is {limit} bytes",
            code=ErrorCode.TOO_LARGE,
        )
    async with await trio.open_file(path, "wb") as out:
        await out.write(frame.payload)
    return frame.filename


async def _receive_chunked(
    job: Job, services: Services, outbox: Outbox, path: Path, index: int, files: list[FileSpec]
) -> str:
    """Chunks at increasing offsets, each written to disk before the next is taken."""
    spec = files[index]
    upload = UploadState(spec.size, spec.sha256, services.config.chunk_bytes)
    name = ""
    async with await trio.open_file(path, "wb") as out:
        while not upload.complete:
            frame = await job._uploads[1].receive()
            offset = frame.extra.get("offset")
            try:
                upload.check(
                    job.job_id, offset if type(offset) is int else None, len(frame.payload)
                )
            except ProtocolError as exc:  # refused chunk; the upload carries on
                await outbox.send(Error(exc.code, exc.message, job.job_id, exc.details))
                continue
            await trio.to_thread.run_sync(upload.store, out.wrapped, frame.payload)
            # Written bytes now show in the disk's free space: stop reserving them too.
            job.reserved_bytes -= len(frame.payload)
            services.reserved_bytes -= len(frame.payload)
            name = name or frame.filename
            await outbox.send(
                UploadProgress(
                    job.job_id,
                    index,
                    upload.received,
                    upload.size,
                    round(100 * upload.received / upload.size, 1),
                )
            )
    upload.verify()
    return name


async def _ffprobe(services: Services, path: Path, *, ours: bool) -> MediaInfo:
    config = services.config
    # At most one probe per core: probes run outside the worker slots, and a burst of
    # uploads must not crowd out the FFmpeg runs and the event loop.
    async with services.probe_slots:
        raw = await run_capture(
            probe_args(config.ffmpeg.ffprobe, path, ours=ours),
            grace=config.ffmpeg.kill_grace_s,
            niceness=config.ffmpeg.niceness,
        )
    return parse_probe(raw)


async def probe(services: Services, path: Path) -> MediaInfo:
    """Probe an untrusted input. Errors: JobError(INVALID_MEDIA | TOO_LARGE).

    MP4/MOV/3GP are read in-process first (isobmff): an ffprobe start costs as much CPU
    as a small job, and the reader answers only when it is sure to say what ffprobe would.
    """
    config = services.config
    try:
        info = await trio.to_thread.run_sync(probe_isobmff, path)
        if info is None:
            info = await _ffprobe(services, path, ours=False)
    except ProcessFailed:
        raise JobError(
            "the input is not a media file of a supported format", code=ErrorCode.INVALID_MEDIA
        ) from None
    if not any(s.kind in ("video", "audio", "subtitle") for s in info.streams):
        raise JobError(
            "the input has no audio, video or subtitle stream", code=ErrorCode.INVALID_MEDIA
        )
    limits = config.limits
    if info.duration is not None and info.duration > limits.max_duration_s:
        raise JobError(
            f"input lasts {info.duration:.0f} s; the limit is {limits.max_duration_s:g} s",
            code=ErrorCode.TOO_LARGE,
        )
    for stream in info.streams:
        if (stream.width or 0) > limits.max_width or (stream.height or 0) > limits.max_height:
            raise JobError(
                f"input is {stream.width}x{stream.height}; the limit is "
                f"{limits.max_width}x{limits.max_height}",
                code=ErrorCode.TOO_LARGE,
            )
    return info


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


async def _deliver(job: Job, services: Services, outbox: Outbox, plan: Plan) -> None:
    """Verify every output, then send it the way the client asked (v1: one frame each)."""
    config = services.config
    mode = "url" if job.output else (job.delivery.mode if job.delivery else "binary")
    metadata: list[dict[str, Any]] = []
    for output in plan.outputs:
        info = await _verify(services, output.path, output.container)
        meta = {"filename": output.filename, **output_metadata(info, output.container)}
        size = meta["size_bytes"]
        if size > config.max_output_bytes:
            raise JobError(
                f"output is {size} bytes, over the {config.max_output_bytes}-byte output limit",
                code=ErrorCode.TOO_LARGE,
            )
        if mode == "binary" and size > config.max_message_bytes:
            raise JobError(
                f"output is {size} bytes, over the {config.max_message_bytes}-byte limit of a "
                'single message; ask for chunked delivery ("delivery": {"mode": "chunked"}) '
                'or an output URL ("output": {"url": ...})',
                code=ErrorCode.TOO_LARGE,
            )
        if mode != "binary":
            meta["sha256"] = await trio.to_thread.run_sync(sha256_file, output.path)
        metadata.append(meta)
    several = len(metadata) > 1
    names = ", ".join(m["filename"] for m in metadata)
    message = f"{job.operation} completed: {names}"
    if job.output is not None:
        if several:
            raise JobError(
                f"an output URL takes one file; this job made {len(metadata)}",
                code=ErrorCode.VALIDATION_ERROR,
                details={"field": "$.output"},
            )
        # The client's timeouts bound each read and write; this bounds a target that
        # takes the body at a trickle.
        with trio.move_on_after(config.jobs.timeout_s) as uploading:
            metadata[0]["url"] = await put_file(
                services.http,
                job.output.url,
                plan.outputs[0].path,
                CONTENT_TYPES.get(plan.outputs[0].container, "application/octet-stream"),
                allow_private=config.security.allow_private_urls,
            )
        if uploading.cancelled_caught:
            raise JobError(
                f"uploading to the output URL took longer than {config.jobs.timeout_s:g} s",
                code=ErrorCode.URL_UPLOAD_FAILED,
            )
        job.finish()
        await outbox.send(Completed(job.job_id, metadata[0], "url", message))
        return
    await outbox.send(
        Completed(job.job_id, metadata[0], mode, message, outputs=metadata if several else None)
    )
    # A client may ask for smaller chunks, never for more than the server's limit.
    chunk = config.chunk_bytes
    if job.delivery and job.delivery.chunk_kb:
        chunk = min(chunk, job.delivery.chunk_kb * 1024)
    for index, output in enumerate(plan.outputs):
        # Several outputs: each frame says which it is, so a client knows the last one.
        extra = {"index": index, "count": len(plan.outputs)} if several else {}
        last = index == len(plan.outputs) - 1
        if mode == "chunked":
            await _send_chunks(outbox, job, output.path, output.filename, chunk, extra, last)
        else:
            # v1: the frame is one bytes object (trio-websocket takes nothing else), so the
            # output is briefly held twice; chunked delivery is the bounded path.
            async with await trio.open_file(output.path, "rb") as f:
                data = await f.read()
            if last:
                job.finish()
            await outbox.send_binary(encode_header(job.job_id, output.filename, **extra) + data)


async def _send_chunks(
    outbox: Outbox,
    job: Job,
    path: Path,
    filename: str,
    chunk: int,
    extra: dict[str, Any],
    last_output: bool,
) -> None:
    """Chunked delivery: frames with offsets, the last one marked final. The bounded
    outbox makes a slow reader slow down only this loop."""
    size = (await trio.Path(path).stat()).st_size
    offset = 0
    async with await trio.open_file(path, "rb") as f:
        while True:
            data = await f.read(chunk)
            final = offset + len(data) >= size
            header = encode_header(job.job_id, filename, offset=offset, final=final, **extra)
            if final and last_output:
                job.finish()
            await outbox.send_binary(header + data)
            offset += len(data)
            if final:
                return


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


async def _verify(services: Services, path: Path, container: str) -> MediaInfo:
    """Probe an output: FFmpeg exiting 0 does not prove it wrote something playable.

    Still images are checked by parsing their header in-process, and MP4/MOV by reading
    their boxes in-process: that tells all `output_metadata` needs without another
    process start (about 60 ms of CPU) per job.
    """
    try:
        size = (await trio.Path(path).stat()).st_size
    except FileNotFoundError:
        size = 0
    if size == 0:
        raise JobError("FFmpeg produced no output for this input and these options")
    try:
        if container in IMAGE_HEADERS:
            async with await trio.open_file(path, "rb") as f:
                head = await f.read(IMAGE_HEADER_BYTES)
            return image_info(head, size)
        # Our MP4/MOV/M4A outputs are read in-process too, ffprobe being the fallback.
        info = await trio.to_thread.run_sync(probe_isobmff, path)
        return info if info is not None else await _ffprobe(services, path, ours=True)
    except (ProcessFailed, JobError, NotAnImage):
        raise JobError("FFmpeg produced an unreadable output") from None
