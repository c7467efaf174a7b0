"""Operations: validated options and probed inputs in, an FFmpeg plan out. Pure functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ffserve.ops.common import Output, Plan, Source, ffmpeg_prefix
from ffserve.ops.filters import apply_filters
from ffserve.ops.retime import speed, trim
from ffserve.ops.stills import gif, thumbnail
from ffserve.ops.transcode import compress, convert, extract_audio, remove_audio
from ffserve.options import Options

BUILDERS: dict[str, Callable[[Any, Source, Path], Plan]] = {
    "speed": speed,
    "compress": compress,
    "extract_audio": extract_audio,
    "remove_audio": remove_audio,
    "convert": convert,
    "thumbnail": thumbnail,
    "trim": trim,
    "gif": gif,
    "filter": apply_filters,
}


def build_plan(operation: str, options: Options, sources: list[Source], workdir: Path) -> Plan:
    """The FFmpeg work for one job. Errors: JobError when the media does not fit the operation."""
    return BUILDERS[operation](options, sources[0], workdir)


__all__ = ["Output", "Plan", "Source", "build_plan", "ffmpeg_prefix"]
