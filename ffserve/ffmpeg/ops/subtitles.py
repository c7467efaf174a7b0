"""Subtitle operations: extract a subtitle stream to a file, or burn subtitles into video.

Burning never puts a path into a filter graph that a client can influence: the subtitles
(from the input's own stream or an uploaded file) are first converted by a whitelisted
FFmpeg run into `subs.ass` in the job's dir, and the burn step runs with that dir as its
working directory and the constant filter `ass=subs.ass`.
"""

from __future__ import annotations

from pathlib import Path

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    MP4_AUDIO_COPY,
    Container,
    Plan,
    Source,
    encode_audio,
    encode_video,
    even_fix,
    output_args,
    read,
    require_timeline,
    require_video,
    write,
)
from ffserve.ffmpeg.promise import Promise, same_streams, seconds
from ffserve.media.streams import Stream
from ffserve.wire.options import BurnSubtitleOptions, SubtitleOptions

TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
SUBTITLE_FORMATS = {
    "srt": (Container("srt", "srt", frozenset(), frozenset(), None, None), "srt"),
    "ass": (Container("ass", "ass", frozenset(), frozenset(), None, None), "ass"),
    "vtt": (Container("vtt", "webvtt", frozenset(), frozenset(), None, None), "webvtt"),
}
SUBS_FILE = "subs.ass"


def pick_subtitle(source: Source, index: int) -> Stream:
    """The `index`-th subtitle stream (0-based among subtitle streams) that holds text."""
    streams = source.info.subtitles
    if index >= len(streams):
        have = f"only {len(streams)}" if streams else "no"
        raise JobError(
            f"subtitle_index {index} does not exist: the input has {have} subtitle stream(s)",
            code=ErrorCode.NO_SUBTITLE_STREAM,
            details={"field": "$.options.subtitle_index", "subtitle_streams": len(streams)},
        )
    stream = streams[index]
    if stream.codec not in TEXT_SUBTITLE_CODECS:
        raise JobError(
            f"subtitle stream {index} is {stream.codec}, a picture format that "
            "cannot be turned into text",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    return stream


def extract_subtitles(options: SubtitleOptions, source: Source, workdir: Path) -> Plan:
    stream = pick_subtitle(source, options.subtitle_index)
    container, codec = SUBTITLE_FORMATS[options.format]
    output = write(workdir, source, "subs", container)
    # -copyts: cue times as the file has them, not shifted by other streams' start offset.
    args = [
        *read(source),
        "-copyts",
        "-map",
        f"0:{stream.index}",
        "-c:s",
        codec,
        *output_args(output, container),
    ]
    # A subtitle file: no duration or picture to hold it to.
    return Plan(tuple(args), (output,), None, promise=Promise("extract_subtitles"))


def burn_subtitles(options: BurnSubtitleOptions, sources: list[Source], workdir: Path) -> Plan:
    video_source = sources[0]
    size = require_video(video_source, "burn_subtitles")
    duration = require_timeline(video_source, "burn_subtitles")
    if len(sources) > 1:
        subtitle_source = sources[1]
        if not subtitle_source.info.subtitles:
            raise JobError(
                "the second upload of burn_subtitles must be a subtitle file (SRT, ASS or WebVTT)",
                code=ErrorCode.INVALID_MEDIA,
                details={"input": 1},
            )
        stream = pick_subtitle(subtitle_source, 0)
    else:
        subtitle_source = video_source
        stream = pick_subtitle(video_source, options.subtitle_index)
    subs = workdir / SUBS_FILE
    prepare = (
        *read(subtitle_source),
        "-map",
        f"0:{stream.index}",
        "-c:s",
        "ass",
        "-f",
        "ass",
        f"file:{subs}",
    )
    info = video_source.info
    video = info.video
    assert video is not None
    container = CONTAINERS[options.format or "mp4"]
    args = [
        *read(video_source),
        "-map",
        f"0:{video.index}",
        "-filter:v",
        ",".join([f"ass={SUBS_FILE}", *even_fix(size)]),
        *encode_video(container.default_video or "h264"),
    ]
    if info.audio is not None:
        args += ["-map", f"0:{info.audio.index}"]
        if info.audio.codec in MP4_AUDIO_COPY and container.ext in ("mp4", "mov", "mkv"):
            args += ["-c:a", "copy"]
        else:
            args += encode_audio(container.default_audio or "aac")
    output = write(workdir, video_source, "subtitled", container)
    args += ["-sn", "-dn", *output_args(output, container)]
    promise = same_streams(info, f"burn_subtitles into {seconds(duration)}", duration)
    return Plan(tuple(args), (output,), duration, before=(prepare,), promise=promise)
