"""Per-operation options with protocol v1's field names and ranges.

`parse_options(operation, raw)` structures a `start_job.options` object into the class
for that operation; an option belonging to another operation is an unknown field.
Only numbers, booleans and words from closed sets get through, so nothing a client
sends is ever spliced into an FFmpeg argument or filter graph as text.
"""

from __future__ import annotations

from typing import Any

import attrs

from ffserve.errors import ErrorCode, ValidationError
from ffserve.schema import FieldValueError, in_range, one_of, structure

VIDEO_CONTAINERS = ("mp4", "mkv", "webm", "mov", "avi", "ts", "flv", "ogv", "3gp")
AUDIO_FORMATS = ("mp3", "aac", "wav", "opus", "m4a", "flac", "ogg")
SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "theora")
AUDIO_CODECS = ("aac", "mp3", "opus", "vorbis", "flac", "pcm", "ac3")


def _dimension(low: int = 16, high: int = 8192) -> Any:
    return attrs.field(default=None, validator=in_range(low, high))


@attrs.frozen
class SpeedOptions:
    speed_factor: float = attrs.field(validator=in_range(0.25, 10))
    maintain_pitch: bool = True


@attrs.frozen
class CompressOptions:
    preset: str = attrs.field(default="medium", validator=one_of("low", "medium", "high", "custom"))
    video_bitrate_kbps: int | None = attrs.field(default=None, validator=in_range(50, 100_000))
    audio_bitrate_kbps: int | None = attrs.field(default=None, validator=in_range(8, 512))
    crf: int | None = attrs.field(default=None, validator=in_range(0, 51))
    max_width: int | None = _dimension()
    max_height: int | None = _dimension()
    target_format: str | None = attrs.field(
        default=None, validator=one_of("mp4", "mkv", "webm", "mov")
    )

    def __attrs_post_init__(self) -> None:
        if self.preset == "custom" and self.crf is None and self.video_bitrate_kbps is None:
            raise FieldValueError("crf", "preset custom needs crf or video_bitrate_kbps")


@attrs.frozen
class ExtractAudioOptions:
    format: str = attrs.field(default="mp3", validator=one_of(*AUDIO_FORMATS))
    bitrate_kbps: int | None = attrs.field(default=None, validator=in_range(8, 512))
    sample_rate: int | None = attrs.field(default=None, validator=one_of(*SAMPLE_RATES))

    def __attrs_post_init__(self) -> None:
        if self.format == "opus" and self.sample_rate not in (None, *OPUS_SAMPLE_RATES):
            raise FieldValueError(
                "sample_rate",
                "opus supports sample_rate " + ", ".join(map(str, OPUS_SAMPLE_RATES)),
            )


@attrs.frozen
class RemoveAudioOptions:
    keep_video_quality: bool = True


@attrs.frozen
class ConvertOptions:
    target_format: str = attrs.field(validator=one_of(*VIDEO_CONTAINERS, *AUDIO_FORMATS))
    stream_copy: bool = False
    video_codec: str | None = attrs.field(default=None, validator=one_of(*VIDEO_CODECS))
    audio_codec: str | None = attrs.field(default=None, validator=one_of(*AUDIO_CODECS))


@attrs.frozen
class ThumbnailOptions:
    timestamp: float | None = attrs.field(default=None, validator=in_range(0, 1e7))
    count: int | None = attrs.field(default=None, validator=in_range(1, 20))
    format: str = attrs.field(default="jpeg", validator=one_of("png", "jpeg", "jpg"))
    width: int | None = _dimension()
    height: int | None = _dimension()

    def __attrs_post_init__(self) -> None:
        if self.timestamp is not None and self.count is not None:
            raise FieldValueError("count", "give either timestamp or count, not both")


@attrs.frozen
class TrimOptions:
    start_time: float = attrs.field(validator=in_range(0, 1e7))
    end_time: float = attrs.field(validator=in_range(0, 1e7))

    def __attrs_post_init__(self) -> None:
        if self.end_time <= self.start_time:
            raise FieldValueError("end_time", "end_time must be greater than start_time")


@attrs.frozen
class ConcatOptions:
    file_count: int = attrs.field(validator=in_range(2, 50))


@attrs.frozen
class GifOptions:
    start_time: float = attrs.field(default=0.0, validator=in_range(0, 1e7))
    duration: float = attrs.field(default=5.0, validator=in_range(0.1, 30))
    fps: int = attrs.field(default=10, validator=in_range(1, 30))
    width: int | None = attrs.field(default=480, validator=in_range(16, 1920))
    optimize: bool = True


@attrs.frozen
class ScaleFilter:
    width: int | None = _dimension()
    height: int | None = _dimension()

    def __attrs_post_init__(self) -> None:
        if self.width is None and self.height is None:
            raise FieldValueError("width", "scale needs width, height or both")


@attrs.frozen
class RotateFilter:
    angle: float = attrs.field(validator=in_range(-360, 360))


@attrs.frozen
class CropFilter:
    width: int = attrs.field(validator=in_range(2, 65536))
    height: int = attrs.field(validator=in_range(2, 65536))
    x: int = attrs.field(default=0, validator=in_range(0, 65536))
    y: int = attrs.field(default=0, validator=in_range(0, 65536))


@attrs.frozen
class FpsFilter:
    fps: float = attrs.field(validator=in_range(1, 120))


@attrs.frozen
class VolumeFilter:
    volume: float = attrs.field(validator=in_range(0, 10))


@attrs.frozen
class NormalizeFilter:
    target_lufs: float = attrs.field(default=-16.0, validator=in_range(-70, -5))


VideoFilter = ScaleFilter | RotateFilter | CropFilter | FpsFilter
AudioFilter = VolumeFilter | NormalizeFilter
MAX_FILTERS = 20
AnyFilter = ScaleFilter | RotateFilter | CropFilter | FpsFilter | VolumeFilter | NormalizeFilter
FILTER_TYPES: dict[str, type[Any]] = {
    "scale": ScaleFilter,
    "rotate": RotateFilter,
    "crop": CropFilter,
    "fps": FpsFilter,
    "volume": VolumeFilter,
    "normalize": NormalizeFilter,
}


@attrs.frozen
class FilterOptions:
    filters: tuple[AnyFilter, ...] = attrs.field()

    @filters.validator
    def _count(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        if not 1 <= len(value) <= MAX_FILTERS:
            raise FieldValueError(attribute.name, f"filters must list 1 to {MAX_FILTERS} filters")


@attrs.frozen
class SubtitleOptions:
    subtitle_index: int = attrs.field(default=0, validator=in_range(0, 99))
    format: str = attrs.field(default="srt", validator=one_of("srt", "ass", "vtt"))


@attrs.frozen
class BurnSubtitleOptions:
    subtitle_index: int = attrs.field(default=0, validator=in_range(0, 99))
    # True: the subtitles come as a second upload (SRT, ASS or WebVTT file) of the job.
    subtitle_upload: bool = False
    format: str | None = attrs.field(default=None, validator=one_of("mp4", "mkv", "webm", "mov"))


@attrs.frozen
class ProbeOptions:
    pass


Options = (
    SpeedOptions
    | CompressOptions
    | ExtractAudioOptions
    | RemoveAudioOptions
    | ConvertOptions
    | ThumbnailOptions
    | TrimOptions
    | ConcatOptions
    | GifOptions
    | FilterOptions
    | SubtitleOptions
    | BurnSubtitleOptions
    | ProbeOptions
)

OPERATIONS: dict[str, type[Any]] = {
    "speed": SpeedOptions,
    "compress": CompressOptions,
    "extract_audio": ExtractAudioOptions,
    "remove_audio": RemoveAudioOptions,
    "convert": ConvertOptions,
    "thumbnail": ThumbnailOptions,
    "trim": TrimOptions,
    "gif": GifOptions,
    "filter": FilterOptions,
    "concat": ConcatOptions,
    "extract_subtitles": SubtitleOptions,
    "burn_subtitles": BurnSubtitleOptions,
    "probe": ProbeOptions,
}


def parse_options(operation: str, raw: dict[str, Any]) -> Options:
    """Errors: ValidationError(UNKNOWN_OPERATION | VALIDATION_ERROR) naming `$.options.<field>`."""
    cls = OPERATIONS.get(operation)
    if cls is None:
        error = ValidationError(
            f"unknown operation {operation[:40]!r}; expected one of {', '.join(OPERATIONS)}",
            field="$.operation",
        )
        error.code = ErrorCode.UNKNOWN_OPERATION
        raise error
    options: Options = structure(raw, cls, path="$.options")
    return options


def _structure_filter(data: Any, _: Any) -> AnyFilter:
    kind = data.get("type") if isinstance(data, dict) else None
    cls = FILTER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"expected filter type to be one of {', '.join(FILTER_TYPES)}")
    from ffserve.schema import converter

    result: AnyFilter = converter.structure({k: v for k, v in data.items() if k != "type"}, cls)
    return result


def _register() -> None:
    from ffserve.schema import converter

    converter.register_structure_hook(AnyFilter, _structure_filter)


_register()
