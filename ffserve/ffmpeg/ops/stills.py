"""Operations that turn video into pictures: thumbnail and gif."""

from __future__ import annotations

from pathlib import Path

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    Container,
    Plan,
    Source,
    fit_within,
    num,
    output_args,
    read,
    require_video,
    seek_stage,
    write,
)
from ffserve.ffmpeg.promise import Promise, seconds
from ffserve.wire.options import GifOptions, ThumbnailOptions

IMAGE_CONTAINERS = {
    "png": Container("png", "image2", frozenset({"png"}), frozenset(), "png", None),
    "jpeg": Container("jpg", "image2", frozenset({"mjpeg"}), frozenset(), "mjpeg", None),
}
GIF = Container("gif", "gif", frozenset({"gif"}), frozenset(), "gif", None)


def thumbnail_times(duration: float | None, options: ThumbnailOptions) -> list[float]:
    """Timestamps to grab: the one asked for, or `count` spread evenly across the whole
    duration (the middle of each of `count` equal parts), or the middle by default."""
    if duration is None:  # a still image: its only frame
        return [0.0] * (options.count or 1)
    if options.timestamp is not None:
        if options.timestamp > duration:
            raise JobError(
                f"timestamp {num(options.timestamp)} s is past the input's end ({num(duration)} s)",
                code=ErrorCode.OUT_OF_RANGE,
                details={"field": "$.options.timestamp", "input_duration": duration},
            )
        return [options.timestamp]
    count = options.count or 1
    return [duration * (i + 0.5) / count for i in range(count)]


def thumbnail(options: ThumbnailOptions, source: Source, workdir: Path) -> Plan:
    size = require_video(source, "thumbnail")
    video = source.info.video
    assert video is not None
    duration = None if source.info.is_image else source.info.duration
    kind = "jpeg" if options.format in ("jpeg", "jpg") else "png"
    container = IMAGE_CONTAINERS[kind]
    times = thumbnail_times(duration, options)
    if options.width is not None or options.height is not None:
        w, h = fit_within(size, options.width, options.height)
        scale = [f"scale={w}:{h}"]
    else:
        (w, h), scale = size, []
    quality = ["-q:v", "2"] if kind == "jpeg" else []
    # The last frame starts a frame before the end: never seek past it.
    frame = 1 / (video.fps or 25.0)
    seeks = [max(0.0, min(when, (duration or 0.0) - frame)) if duration else 0.0 for when in times]
    args: list[str] = []
    picks: list[tuple[int, list[str]]]  # (input, output seek) per picture
    if source.info.seekable:
        # One input per picture, each seeked to its own keyframe: no decoding in between.
        for seek in seeks:
            args += read(source, seek=seek)
        picks = [(n, []) for n in range(len(seeks))]
    else:
        # One input decoded once from the start; each output drops the frames before its own.
        args += read(source)
        picks = [(0, ["-ss", num(seek)] if seek else []) for seek in seeks]
    outputs = []
    for n, (input_index, seek_args) in enumerate(picks):
        output = write(workdir, source, "thumb", container, index=n + 1 if len(times) > 1 else None)
        outputs.append(output)
        vf = [*scale, "format=yuvj420p" if kind == "jpeg" else "format=rgb24"]
        args += [
            *seek_args,
            "-map",
            f"{input_index}:{video.index}",
            "-frames:v",
            "1",
            "-filter:v",
            ",".join(vf),
            "-c:v",
            container.default_video or "png",
            *quality,
            "-update",
            "1",
            *output_args(output, container),
        ]
    stage = seek_stage(source) if any(seeks) else "processing"
    promise = Promise(f"thumbnail of {w}x{h}", video=True, size=(w, h))
    return Plan(tuple(args), tuple(outputs), None, stage, frame_size=(w, h), promise=promise)


def gif(options: GifOptions, source: Source, workdir: Path) -> Plan:
    size = require_video(source, "gif")
    video = source.info.video
    assert video is not None
    duration = source.info.duration
    if source.info.is_image:
        raise JobError(
            "gif needs a moving video; the input is a still image", code=ErrorCode.UNSUPPORTED_MEDIA
        )
    if duration is None:
        raise JobError(
            "gif needs a video with a duration; the input states none and reading its "
            "packets found none",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    if options.start_time >= duration:
        raise JobError(
            f"start_time {num(options.start_time)} s is at or past the input's end "
            f"({num(duration)} s)",
            code=ErrorCode.OUT_OF_RANGE,
            details={"field": "$.options.start_time", "input_duration": duration},
        )
    length = min(options.duration, duration - options.start_time)
    width = options.width or size[0]
    height = max(2, round(size[1] * width / size[0]))
    frame = 1 / options.fps
    # The fps filter ends the GIF at the clip's end rounded to the nearest GIF frame: a clip
    # shorter than a frame (a 1-frame video) would round to none. Passing the last frame
    # through at the end gives it its one frame; longer clips keep the rounding, which
    # `pass` would lengthen by a frame.
    eof = ":eof_action=pass" if length < frame else ""
    base = f"fps={options.fps}{eof},scale={width}:{height}:flags=lanczos"
    args = read(source, seek=options.start_time, duration=length)
    if options.optimize:
        # Palette made from this clip and used in the same run: one decode.
        graph = (
            f"[0:{video.index}]{base},split[a][b];[a]palettegen=stats_mode=diff[p];"
            "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle[out]"
        )
        args += ["-filter_complex", graph, "-map", "[out]"]
    else:
        args += ["-map", f"0:{video.index}", "-filter:v", base]
    output = write(workdir, source, "anim", GIF)
    args += ["-loop", "0", *output_args(output, GIF)]
    promise = Promise(
        f"gif of {seconds(length)} at {options.fps} fps",
        max(length, frame),  # at least the one frame, lasting 1/fps
        # GIF frame delays count in 1/100 s; the last frame lasts a whole 1/fps.
        2 * frame + 0.02,
        video=True,
        size=(width, height),
    )
    stage = seek_stage(source) if options.start_time else "processing"
    return Plan(tuple(args), (output,), length, stage, frame_size=(width, height), promise=promise)
