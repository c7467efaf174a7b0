"""What is in a file: untrusted inputs checked against the limits, our outputs verified.

The cheap readers go first (PNG/JPEG headers, MP4/MOV boxes, both in-process): an ffprobe
start costs about 60 ms of CPU here, as much as a small job. ffprobe, with the same
file-only protocol and demuxer whitelist as FFmpeg, answers everything else.
"""

from __future__ import annotations

from pathlib import Path

import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.arguments import probe_args
from ffserve.ffmpeg.process import ProcessFailed, run_capture
from ffserve.jobs.services import Services
from ffserve.media.image import NotAnImage, image_info
from ffserve.media.mp4.streams import probe_isobmff
from ffserve.media.streams import MediaInfo, parse_probe

IMAGE_HEADERS = frozenset({"png", "jpg"})
IMAGE_HEADER_BYTES = 256 * 1024  # room for EXIF and other segments before a JPEG's frame header


async def _read_isobmff(services: Services, path: Path) -> MediaInfo | None:
    # Under the probe slots too: it is CPU and memory, just less of both.
    async with services.probe_slots:
        return await trio.to_thread.run_sync(probe_isobmff, path)


async def ffprobe(services: Services, path: Path) -> MediaInfo:
    config = services.config
    # At most one probe per core: probes run outside the worker slots, and a burst of
    # uploads must not crowd out the FFmpeg runs and the event loop.
    async with services.probe_slots:
        raw = await run_capture(
            probe_args(config.ffmpeg.ffprobe, path),
            grace=config.ffmpeg.kill_grace_s,
            niceness=config.ffmpeg.niceness,
        )
    return parse_probe(raw)


async def probe_input(services: Services, path: Path) -> MediaInfo:
    """Probe an untrusted input. Errors: JobError(INVALID_MEDIA | TOO_LARGE).

    MP4/MOV/3GP are read in-process first (isobmff): an ffprobe start costs as much CPU
    as a small job, and the reader answers only when it is sure to say what ffprobe would.
    """
    config = services.config
    try:
        info = await _read_isobmff(services, path)
        if info is None:
            info = await ffprobe(services, path)
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


async def verify_output(services: Services, path: Path, container: str) -> MediaInfo:
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
        info = await _read_isobmff(services, path)
        return info if info is not None else await ffprobe(services, path)
    except (ProcessFailed, JobError, NotAnImage):
        raise JobError("FFmpeg produced an unreadable output") from None
