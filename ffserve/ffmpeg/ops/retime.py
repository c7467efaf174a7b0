"""Operations that change the timeline: speed and trim."""

from __future__ import annotations

from pathlib import Path

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    Container,
    Plan,
    Source,
    audio_family,
    encode_audio,
    encode_video,
    even_fix,
    num,
    output_args,
    read,
    require_timeline,
    seek_stage,
    video_maps,
    write,
)
from ffserve.ffmpeg.promise import same_streams, seconds
from ffserve.wire.options import SpeedOptions, TrimOptions

# Speeding up keeps every frame (2x of 25 fps plays at 50 fps) up to this rate.
MAX_SPEED_FPS = 60.0

# A trim end this close past the input's end is rounding, not a mistake: clamp it.
END_TOLERANCE_S = 0.05


def new_timeline(container: Container) -> list[str]:
    """Streams a retimed output must not carry: subtitles, data and attachments are never
    mapped (`-map` names the kept streams; -sn -dn say so twice), and the MP4/MOV muxer's
    timecode track, which it makes from the video's `timecode` tag, is left out: it would
    name the input's frames, not the output's."""
    no_timecode = ["-write_tmcd", "0"] if container.muxer in ("mp4", "mov") else []
    return ["-sn", "-dn", *no_timecode]


def atempo_chain(factor: float) -> list[str]:
    """`atempo` accepts 0.5-2 per instance; chain instances to reach 0.25-10."""
    steps = []
    while factor > 2.0:
        steps.append("atempo=2")
        factor /= 2.0
    while factor < 0.5:
        steps.append("atempo=0.5")
        factor /= 0.5
    steps.append(f"atempo={num(factor)}")
    return steps


def speed(options: SpeedOptions, source: Source, workdir: Path) -> Plan:
    duration = require_timeline(source, "speed")
    info = source.info
    factor = options.speed_factor
    args = read(source)
    if info.video is not None:
        container = CONTAINERS["mp4"]
        args += video_maps(source)
        # An explicit output rate: without it the muxer's constant-rate conversion adds or
        # drops frames at the end, and the duration misses input/factor by up to 3 frames.
        fps = info.video.fps or 25.0
        out_fps = min(fps * factor, max(fps, MAX_SPEED_FPS)) if factor > 1 else fps
        vf = [
            f"setpts=PTS/{num(factor)}",
            f"fps={num(out_fps)}",
            *even_fix(info.video.display_size or (2, 2)),
        ]
        args += ["-filter:v", ",".join(vf), *encode_video()]
    else:
        container = audio_family(source)
        args += ["-map", f"0:{info.audio.index}"] if info.audio else []
    if info.audio is not None:
        if options.maintain_pitch:
            af = atempo_chain(factor)
        else:
            rate = info.audio.sample_rate or 48000
            af = [f"asetrate={round(rate * factor)}", f"aresample={rate}"]
        # Decoders emit the last frame whole (AAC: up to 1024 samples of padding past the
        # end); slowed down 4x that padding would play on after the picture has ended.
        af = [f"atrim=end={num(duration)}", *af]
        args += ["-filter:a", ",".join(af), *encode_audio(container.default_audio or "aac")]
    output = write(workdir, source, "speed", container)
    args += [*new_timeline(container), *output_args(output, container)]
    promise = same_streams(info, f"speed {num(factor)} of {seconds(duration)}", duration / factor)
    return Plan(tuple(args), (output,), duration / factor, promise=promise)


def trim(options: TrimOptions, source: Source, workdir: Path) -> Plan:
    duration = require_timeline(source, "trim")
    start, end = options.start_time, options.end_time
    if start >= duration:
        raise JobError(
            f"start_time {num(start)} s is at or past the input's end ({num(duration)} s)",
            code=ErrorCode.OUT_OF_RANGE,
            details={"field": "$.options.start_time", "input_duration": duration},
        )
    if end > duration + END_TOLERANCE_S:
        raise JobError(
            f"end_time {num(end)} s is past the input's end ({num(duration)} s)",
            code=ErrorCode.OUT_OF_RANGE,
            details={"field": "$.options.end_time", "input_duration": duration},
        )
    length = min(end, duration) - start
    info = source.info
    # Seeking plus re-encoding is frame-accurate even off keyframes.
    args = read(source, seek=start)
    if info.video is not None:
        container = CONTAINERS["mp4"]
        args += video_maps(source)
        args += ["-filter:v", ",".join(even_fix(info.video.display_size or (2, 2)) or ["null"])]
        args += encode_video()
        if info.audio is not None:
            args += encode_audio()
    else:
        container = audio_family(source)
        args += ["-map", f"0:{info.audio.index}"] if info.audio else []
        args += encode_audio(container.default_audio or "aac")
    output = write(workdir, source, "trim", container)
    args += ["-t", num(length), *new_timeline(container), *output_args(output, container)]
    stage = seek_stage(source) if start else "processing"
    why = f"trim {num(start)}-{num(start + length)} s of {seconds(duration)}"
    return Plan(tuple(args), (output,), length, stage, promise=same_streams(info, why, length))
