"""The `filter` operation: a chain of validated video and audio filters."""

from __future__ import annotations

import math
from pathlib import Path

import attrs

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    MP4_AUDIO_COPY,
    Container,
    Plan,
    Source,
    audio_family,
    copy_video,
    encode_audio,
    encode_video,
    even,
    even_fix,
    num,
    output_args,
    read,
    reencode_video,
    require_audio,
    require_video,
    write,
)
from ffserve.ffmpeg.ops.stills import IMAGE_CONTAINERS
from ffserve.ffmpeg.promise import Promise, same_streams, seconds
from ffserve.wire.options import (
    AudioFilter,
    CropFilter,
    FilterOptions,
    FpsFilter,
    NormalizeFilter,
    RotateFilter,
    ScaleFilter,
    VolumeFilter,
)


def video_filter(f: object, size: tuple[int, int], index: int) -> tuple[list[str], tuple[int, int]]:
    """One validated filter as FFmpeg filter text, and the frame size after it."""
    w, h = size
    if isinstance(f, ScaleFilter):
        if f.width is not None and f.height is not None:
            new = (even(f.width), even(f.height))
        elif f.width is not None:
            new = (even(f.width), even(h * f.width / w))
        else:
            assert f.height is not None
            new = (even(w * f.height / h), even(f.height))
        return [f"scale={new[0]}:{new[1]}"], new
    if isinstance(f, RotateFilter):
        angle = f.angle % 360
        if angle == 0:
            return [], size
        if angle in (90, 180, 270):
            # Transposes, not `rotate`: exact, and no black borders.
            steps = {90: ["transpose=clock"], 180: ["hflip", "vflip"], 270: ["transpose=cclock"]}
            return steps[int(angle)], ((h, w) if angle != 180 else size)
        rad = math.radians(angle)
        new = (
            even(math.ceil(abs(w * math.cos(rad)) + abs(h * math.sin(rad)))),
            even(math.ceil(abs(w * math.sin(rad)) + abs(h * math.cos(rad)))),
        )
        return [f"rotate={num(rad)}:ow={new[0]}:oh={new[1]}:c=black"], new
    if isinstance(f, CropFilter):
        if f.x + f.width > w or f.y + f.height > h:
            raise JobError(
                f"crop {f.width}x{f.height} at ({f.x},{f.y}) does not fit the {w}x{h} frame",
                code=ErrorCode.VALIDATION_ERROR,
                details={"field": f"$.options.filters[{index}]"},
            )
        return [f"crop={f.width}:{f.height}:{f.x}:{f.y}"], (f.width, f.height)
    assert isinstance(f, FpsFilter)
    return [f"fps={num(f.fps)}"], size


def audio_filter(f: AudioFilter) -> str:
    if isinstance(f, VolumeFilter):
        return f"volume={num(f.volume)}"
    assert isinstance(f, NormalizeFilter)
    return f"loudnorm=I={num(f.target_lufs)}:TP=-1.5:LRA=11"


def apply_filters(options: FilterOptions, source: Source, workdir: Path) -> Plan:
    info = source.info
    video_chain: list[str] = []
    audio_chain: list[str] = []
    size: tuple[int, int] | None = None
    for i, f in enumerate(options.filters):
        if isinstance(f, VolumeFilter | NormalizeFilter):
            require_audio(source, f"the {type(f).__name__.removesuffix('Filter').lower()} filter")
            audio_chain.append(audio_filter(f))
        else:
            if size is None:
                size = require_video(source, "video filters")
            if isinstance(f, FpsFilter) and info.is_image:
                raise JobError(
                    "the fps filter needs a moving video; the input is a still image",
                    code=ErrorCode.UNSUPPORTED_MEDIA,
                )
            text, size = video_filter(f, size, i)
            video_chain += text
    if any(isinstance(f, NormalizeFilter) for f in options.filters):
        # loudnorm resamples to 192 kHz internally and outputs that rate; go back to the
        # input's rate (the encoder would otherwise pick its highest rate, 96 kHz for AAC).
        # `aformat`, not `aresample`: the latter fails on inputs whose channel layout is
        # unknown (WAV without a channel mask) in FFmpeg 5.1.
        assert info.audio is not None
        audio_chain.append(f"aformat=sample_rates={info.audio.sample_rate or 48000}")
    video = info.video
    args = read(source)
    if info.is_image:
        container: Container = IMAGE_CONTAINERS["png"]
        assert video is not None
        args += [
            "-map",
            f"0:{video.index}",
            "-filter:v",
            ",".join(video_chain or ["null"]),
            "-frames:v",
            "1",
            "-c:v",
            "png",
            "-update",
            "1",
        ]
    elif video is not None:
        container = CONTAINERS["mp4"]
        args += ["-map", f"0:{video.index}"]
        if video_chain:
            chain = video_chain + even_fix(size or (2, 2))
            args += ["-filter:v", ",".join(chain), *encode_video()]
        elif video.codec in container.video_codecs:
            args += copy_video(
                video.codec, container
            )  # audio-only filtering leaves the video untouched
        else:
            args += reencode_video(video.display_size)
        if info.audio is not None:
            args += ["-map", f"0:{info.audio.index}"]
            if audio_chain:
                args += ["-filter:a", ",".join(audio_chain), *encode_audio()]
            elif info.audio.codec in MP4_AUDIO_COPY:
                args += ["-c:a", "copy"]
            else:
                args += encode_audio()
    else:
        container = audio_family(source)
        assert info.audio is not None
        args += [
            "-map",
            f"0:{info.audio.index}",
            "-filter:a",
            ",".join(audio_chain),
            *encode_audio(container.default_audio or "aac"),
        ]
    output = write(workdir, source, "filtered", container)
    args += ["-sn", "-dn", *output_args(output, container)]
    duration = None if info.is_image else info.duration
    if info.is_image:
        promise = Promise("filter of a still image", video=True, size=size)
    else:
        why = f"filter of {seconds(duration)}" if duration else "filter"
        promise = same_streams(info, why, duration)
        if size is not None:  # odd sizes are made even for H.264
            promise = attrs.evolve(promise, size=(even(size[0]), even(size[1])))
    return Plan(tuple(args), (output,), duration, frame_size=size, promise=promise)
