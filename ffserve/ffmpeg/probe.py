"""What is in a file: untrusted inputs checked against the limits, our outputs read back.

The cheap readers go first (PNG/JPEG headers, MP4/MOV boxes, both in-process): an ffprobe
start costs about 60 ms of CPU here, as much as a small job. ffprobe, with the same
file-only protocol and demuxer whitelist as FFmpeg, answers everything else.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import trio

from ffserve.config import FFmpegConfig, LimitsConfig
from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.arguments import measure_args, probe_args
from ffserve.ffmpeg.process import ProcessFailed, run_capture
from ffserve.ffmpeg.progress import ProgressParser
from ffserve.ffmpeg.sandbox import Confinement
from ffserve.media.image import NotAnImage, image_info
from ffserve.media.matroska import NotMatroska, has_cues
from ffserve.media.mp4.edits import hidden_seconds
from ffserve.media.mp4.streams import probe_isobmff
from ffserve.media.streams import MediaInfo, from_first_packet, parse_probe

IMAGE_HEADERS = frozenset({"png", "jpg"})
IMAGE_HEADER_BYTES = 256 * 1024  # room for EXIF and other segments before a JPEG's frame header


@attrs.frozen
class Prober:
    """The server's one prober. At most one probe per core: probes run outside the worker
    slots, and a burst of uploads must not crowd out the FFmpeg runs and the event loop."""

    ffmpeg: FFmpegConfig
    limits: LimitsConfig
    confinement: Confinement
    slots: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(os.cpu_count() or 2)
    )

    async def _read_isobmff(self, path: Path) -> MediaInfo | None:
        # Under the probe slots too: it is CPU and memory, just less of both.
        async with self.slots:
            return await trio.to_thread.run_sync(probe_isobmff, path)

    async def ffprobe(self, path: Path) -> MediaInfo:
        async with self.slots:
            raw = await run_capture(
                probe_args(self.ffmpeg.ffprobe, path, self.limits.max_pixels),
                confinement=self.confinement,
                workdir=path.parent,  # the job's dir: all the probe may see, read-only
                grace=self.ffmpeg.kill_grace_s,
            )
        return parse_probe(raw)

    async def _seek_index(self, path: Path) -> bool:
        def read() -> bool:
            with path.open("rb") as f:
                try:
                    return has_cues(f, path.stat().st_size)
                except NotMatroska:
                    return False  # ffprobe took it for Matroska: trust no index

        async with self.slots:
            return await trio.to_thread.run_sync(read)

    async def _measure(self, path: Path) -> float | None:
        """How long a file that states no duration lasts, by reading all its packets."""
        limits = self.limits
        args = measure_args(self.ffmpeg.ffmpeg, path, limits.max_pixels, limits.max_duration_s + 1)
        parser = ProgressParser(None)
        try:
            async with self.slots:
                parser.feed(
                    await run_capture(
                        args,
                        confinement=self.confinement,
                        workdir=path.parent,
                        grace=self.ffmpeg.kill_grace_s,
                    )
                )
        except ProcessFailed:
            return None  # still no duration: operations that need one say so
        return parser.out_time_s or None

    async def _complete(self, path: Path, info: MediaInfo) -> MediaInfo:
        """What ffprobe's answer leaves out for unindexed inputs: whether FFmpeg can seek
        the file, and the duration of one muxed without it (written to a pipe)."""
        if info.demuxer == "matroska" and not await self._seek_index(path):
            info = attrs.evolve(info, seekable=False)
        if info.duration is None and not info.is_image and (info.video or info.audio):
            info = attrs.evolve(info, duration=await self._measure(path))
        return info

    async def _edits(self, path: Path, info: MediaInfo) -> MediaInfo:
        """What an MP4/MOV's edit lists hide, per stream: neither ffprobe nor the
        isobmff reader says, and a stream copy must know (`Stream.hidden_s`)."""
        async with self.slots:
            hidden = await trio.to_thread.run_sync(hidden_seconds, path)
        if not hidden:
            return info  # boxes not understood: copies go ahead, the promise still holds
        streams = tuple(
            attrs.evolve(s, hidden_s=hidden[s.index]) if s.index < len(hidden) else s
            for s in info.streams
        )
        return attrs.evolve(info, streams=streams)

    async def probe_input(self, path: Path) -> MediaInfo:
        """Probe an untrusted input. Errors: JobError(INVALID_MEDIA | TOO_LARGE).

        MP4/MOV/3GP are read in-process first (isobmff): an ffprobe start costs as much CPU
        as a small job, and the reader answers only when it is sure to say what ffprobe
        would.
        """
        try:
            info = await self._read_isobmff(path)
            if info is None:  # (the reader answers only for inputs starting at 0)
                info = await self._complete(path, from_first_packet(await self.ffprobe(path)))
            if info.demuxer == "mov":
                info = await self._edits(path, info)
        except ProcessFailed:
            raise JobError(
                "the input is not a media file of a supported format", code=ErrorCode.INVALID_MEDIA
            ) from None
        if not any(s.kind in ("video", "audio", "subtitle") for s in info.streams):
            raise JobError(
                "the input has no audio, video or subtitle stream", code=ErrorCode.INVALID_MEDIA
            )
        limits = self.limits
        if info.duration is not None and info.duration > limits.max_duration_s:
            raise JobError(
                f"input lasts {info.duration:.0f} s; the limit is {limits.max_duration_s:g} s",
                code=ErrorCode.TOO_LARGE,
            )
        if len(info.streams) > limits.max_streams:
            raise JobError(
                f"input has {len(info.streams)} streams; the limit is {limits.max_streams}",
                code=ErrorCode.TOO_LARGE,
            )
        for stream in info.streams:
            if (stream.width or 0) > limits.max_width or (stream.height or 0) > limits.max_height:
                raise JobError(
                    f"input is {stream.width}x{stream.height}; the limit is "
                    f"{limits.max_width}x{limits.max_height}",
                    code=ErrorCode.TOO_LARGE,
                )
            # Cover art declares a nominal rate (90000 for an MP3's picture): not frames.
            if (
                stream.kind == "video"
                and not stream.is_cover_art
                and (stream.fps or 0) > limits.max_fps
            ):
                raise JobError(
                    f"input stream {stream.index} declares {stream.fps:g} frames per second; "
                    f"the limit is {limits.max_fps:g}",
                    code=ErrorCode.TOO_LARGE,
                )
        return info

    async def probe_output(self, path: Path, container: str) -> MediaInfo:
        """Read back one of our outputs: FFmpeg exiting 0 does not prove it wrote
        something playable.

        Still images are checked by parsing their header in-process, and MP4/MOV by reading
        their boxes in-process: that tells all `output_metadata` needs without another
        process start (about 60 ms of CPU) per job.

        Errors: JobError(JOB_FAILED) for a missing, empty or unreadable output.
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
            info = await self._read_isobmff(path)
            return info if info is not None else await self.ffprobe(path)
        except (ProcessFailed, JobError, NotAnImage):
            raise JobError("FFmpeg produced an unreadable output") from None
