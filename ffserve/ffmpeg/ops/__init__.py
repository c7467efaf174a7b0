"""Operations: validated options and probed inputs in, an FFmpeg plan out. Pure functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ffserve.ffmpeg.ops.common import Output, Plan, Source, ffmpeg_prefix
from ffserve.ffmpeg.ops.concat import concat
from ffserve.ffmpeg.ops.filters import apply_filters
from ffserve.ffmpeg.ops.retime import speed, trim
from ffserve.ffmpeg.ops.stills import gif, thumbnail
from ffserve.ffmpeg.ops.subtitles import burn_subtitles, extract_subtitles
from ffserve.ffmpeg.ops.transcode import compress, convert, extract_audio, remove_audio
from ffserve.wire.options import BurnSubtitleOptions, ConcatOptions, Options

# Operations on one input.
SINGLE: dict[str, Callable[[Any, Source, Path], Plan]] = {
    "speed": speed,
    "compress": compress,
    "extract_audio": extract_audio,
    "remove_audio": remove_audio,
    "convert": convert,
    "thumbnail": thumbnail,
    "trim": trim,
    "gif": gif,
    "filter": apply_filters,
    "extract_subtitles": extract_subtitles,
}
# Operations on several inputs.
MULTI: dict[str, Callable[[Any, list[Source], Path], Plan]] = {
    "concat": concat,
    "burn_subtitles": burn_subtitles,
}
# Operations that run no FFmpeg at all: the answer is the input's metadata.
METADATA_ONLY = frozenset({"probe"})


def inputs_expected(options: Options) -> int:
    """How many files the job's input consists of (uploads, or 1 for a URL)."""
    if isinstance(options, ConcatOptions):
        return options.file_count
    if isinstance(options, BurnSubtitleOptions) and options.subtitle_upload:
        return 2
    return 1


def build_plan(operation: str, options: Options, sources: list[Source], workdir: Path) -> Plan:
    """The FFmpeg work for one job. Errors: JobError when the media does not fit the operation."""
    if operation in MULTI:
        return MULTI[operation](options, sources, workdir)
    return SINGLE[operation](options, sources[0], workdir)


__all__ = [
    "METADATA_ONLY",
    "Output",
    "Plan",
    "Source",
    "build_plan",
    "ffmpeg_prefix",
    "inputs_expected",
]
