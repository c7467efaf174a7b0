"""What ffprobe tells us about a file, parsed into attrs classes. Parsing is sans-I/O."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import attrs

from ffserve.errors import ErrorCode, JobError

# Demuxers whose stated duration is where the last packet ends counted from 0, not from
# the first packet: Matroska's segment duration, MP4/MOV's movie header. Other demuxers
# (MPEG-TS/PS, Ogg, MP3...) state the span from the first packet already.
COUNTED_FROM_ZERO = frozenset({"matroska", "mov"})


@attrs.frozen
class Stream:
    index: int
    kind: str  # video | audio | subtitle | data | attachment
    codec: str
    profile: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation: int = 0
    sample_rate: int | None = None
    channels: int | None = None
    language: str | None = None
    is_cover_art: bool = False
    bit_rate: int | None = None
    # Seconds of stored media an MP4/MOV edit list hides: a stream copy into a container
    # without edit lists would show them (ffserve.media.mp4.edits).
    hidden_s: float = 0.0

    @property
    def display_size(self) -> tuple[int, int] | None:
        """Width and height as shown, after the rotation FFmpeg applies on decode."""
        if self.width is None or self.height is None:
            return None
        if abs(self.rotation) % 180 == 90:
            return self.height, self.width
        return self.width, self.height


@attrs.frozen
class MediaInfo:
    format_name: str
    duration: float | None
    size_bytes: int
    bit_rate: int | None
    streams: tuple[Stream, ...]
    # False when FFmpeg cannot be trusted to seek the input (`-ss` before `-i`): a
    # Matroska file without Cues. Operations then decode from the start instead.
    seekable: bool = True
    # Where the first packet is in the file's own timeline (5 s, -1 s...): what a seek
    # counts from. `duration` is how long the content lasts from there.
    start_time: float = 0.0

    @property
    def video(self) -> Stream | None:
        """The first real video stream (cover art in an MP3 is not video)."""
        return next((s for s in self.streams if s.kind == "video" and not s.is_cover_art), None)

    @property
    def audio(self) -> Stream | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    @property
    def subtitles(self) -> tuple[Stream, ...]:
        return tuple(s for s in self.streams if s.kind == "subtitle")

    @property
    def is_image(self) -> bool:
        return self.format_name.endswith("_pipe") and self.audio is None

    @property
    def demuxer(self) -> str:
        return self.format_name.split(",")[0]


def parse_probe(raw: bytes) -> MediaInfo:
    """Parse `ffprobe -print_format json -show_format -show_streams` output.

    Errors: JobError(INVALID_MEDIA) if it is not what ffprobe prints for a media file.
    """
    try:
        data = json.loads(raw)
        fmt = data["format"]
        streams = tuple(_stream(s) for s in data.get("streams", ()))
        return MediaInfo(
            format_name=str(fmt["format_name"]),
            duration=_positive(_finite_float(fmt.get("duration"))),
            size_bytes=int(fmt.get("size", 0)),
            bit_rate=_int(fmt.get("bit_rate")),
            streams=streams,
            start_time=_finite_float(fmt.get("start_time")) or 0.0,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise JobError(
            f"could not read the media's metadata ({type(exc).__name__})",
            code=ErrorCode.INVALID_MEDIA,
        ) from None


def from_first_packet(info: MediaInfo) -> MediaInfo:
    """`info` with the duration of an input's content, from its first packet on: what
    FFmpeg outputs of it (shifted to 0). For a Matroska stating 7 s whose first packet is
    at 5 s, 2 s; stating 1 s whose first is at -1 s, 2 s. Only for inputs: an output's
    stated duration, from 0, is the timeline a client plays."""
    if info.duration is None or info.demuxer not in COUNTED_FROM_ZERO or not info.start_time:
        return info
    return attrs.evolve(info, duration=_positive(round(info.duration - info.start_time, 6)))


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _stream(data: dict[str, Any]) -> Stream:
    tags = data.get("tags") or {}
    disposition = data.get("disposition") or {}
    kind = str(data.get("codec_type", "data"))
    return Stream(
        index=int(data["index"]),
        kind=kind,
        codec=str(data.get("codec_name", "unknown")),
        profile=data.get("profile"),
        width=_int(data.get("width")),
        height=_int(data.get("height")),
        fps=_rate(data.get("avg_frame_rate")) or _rate(data.get("r_frame_rate"))
        if kind == "video"
        else None,
        rotation=_rotation(data),
        sample_rate=_int(data.get("sample_rate")),
        channels=_int(data.get("channels")),
        language=tags.get("language"),
        is_cover_art=bool(disposition.get("attached_pic")),
        bit_rate=_int(data.get("bit_rate")),
    )


def _rotation(data: dict[str, Any]) -> int:
    for side in data.get("side_data_list") or ():
        if "rotation" in side:
            return int(side["rotation"])
    rotate = (data.get("tags") or {}).get("rotate")
    return int(rotate) if rotate is not None else 0


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _finite_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _rate(value: Any) -> float | None:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(rate), 3) if rate > 0 else None
