"""Operations that re-package or re-encode: compress, convert, extract_audio, remove_audio."""

from __future__ import annotations

from pathlib import Path

import attrs

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    UNKNOWN_TIMESTAMP,
    UNTIMED_DEMUXERS,
    Container,
    Plan,
    Source,
    audio_family,
    copy_video,
    encode_audio,
    even_fix,
    fit_within,
    hidden_from_copy,
    output_args,
    read,
    reencode_video,
    require_audio,
    require_timeline,
    require_video,
    write,
)
from ffserve.ffmpeg.promise import one_kind, same_streams, seconds
from ffserve.wire.options import (
    CompressOptions,
    ConvertOptions,
    ExtractAudioOptions,
    RemoveAudioOptions,
)

# Quality presets: CRF for H.264 (and VP9, which uses a larger scale) and audio bitrate.
PRESETS = {"high": (20, 31, 192), "medium": (26, 36, 128), "low": (32, 42, 96)}

# Containers a stream-copied video may go into, by the demuxer it came from: its own
# family first (MP4 and 3GP share the "mov" demuxer, and H.263 from a 3GP fits only
# MOV of the two), then Matroska, which holds every codec we know.
COPY_CONTAINERS = {
    "mov": ("mp4", "mov"),
    "matroska": ("mkv",),
    "avi": ("avi",),
    "mpegts": ("ts",),
    "ogg": ("ogv",),
    "flv": ("flv",),
    "mpeg": ("ts",),
}


def compress(options: CompressOptions, source: Source, workdir: Path) -> Plan:
    duration = require_timeline(source, "compress")
    info = source.info
    crf_h264, crf_vp9, audio_kbps = PRESETS.get(options.preset, PRESETS["medium"])
    audio_kbps = options.audio_bitrate_kbps or audio_kbps
    if info.video is None:
        if options.target_format is not None:
            container = CONTAINERS[options.target_format]  # each holds audio alone too
        else:
            container = audio_family(source)
        if container.default_audio not in ("aac", "mp3", "opus", "vorbis"):
            container = CONTAINERS["m4a"]  # lossless in, lossy out: that is the compression
        args = [*read(source), "-map", f"0:{info.audio.index}" if info.audio else "0:a"]
        args += encode_audio(container.default_audio or "aac", audio_kbps)
        output = write(workdir, source, "compressed", container)
        args += ["-vn", *output_args(output, container)]
        promise = same_streams(info, f"compress of {seconds(duration)}", duration)
        return Plan(tuple(args), (output,), duration, promise=promise)

    container = CONTAINERS[options.target_format or "mp4"]
    size = require_video(source, "compress")
    target = fit_within(size, options.max_width, options.max_height, shrink_only=True)
    vf = [f"scale={target[0]}:{target[1]}"] if target != size else even_fix(size)
    args = [*read(source), "-map", f"0:{info.video.index}"]
    if info.audio is not None:
        args += ["-map", f"0:{info.audio.index}"]
    if vf:
        args += ["-filter:v", ",".join(vf)]
    if container.default_video == "vp9":
        crf = options.crf if options.crf is not None else crf_vp9
        args += [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "good",
            "-cpu-used",
            "4",
            "-row-mt",
            "1",
            "-pix_fmt",
            "yuv420p",
        ]
        args += _rate_control(options, crf, vp9=True)
    else:
        crf = options.crf if options.crf is not None else crf_h264
        args += ["-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p"]
        args += _rate_control(options, crf, vp9=False)
    if info.audio is not None:
        args += encode_audio(container.default_audio or "aac", audio_kbps)
    output = write(workdir, source, "compressed", container)
    args += ["-sn", "-dn", *output_args(output, container)]
    promise = same_streams(info, f"compress of {seconds(duration)}", duration)
    return Plan(tuple(args), (output,), duration, promise=promise)


def _rate_control(options: CompressOptions, crf: int, *, vp9: bool) -> list[str]:
    if options.video_bitrate_kbps is not None:
        kbps = options.video_bitrate_kbps
        return ["-b:v", f"{kbps}k", "-maxrate", f"{kbps * 3 // 2}k", "-bufsize", f"{kbps * 2}k"]
    return ["-crf", str(crf), *(["-b:v", "0"] if vp9 else [])]


def extract_audio(options: ExtractAudioOptions, source: Source, workdir: Path) -> Plan:
    require_audio(source, "extract_audio")
    audio = source.info.audio
    assert audio is not None
    container = CONTAINERS[options.format]
    args = [*read(source), "-map", f"0:{audio.index}", "-vn", "-sn", "-dn"]
    args += encode_audio(container.default_audio or "aac", options.bitrate_kbps)
    if options.sample_rate is not None:
        args += ["-ar", str(options.sample_rate)]
    output = write(workdir, source, "audio", container)
    duration = source.info.duration
    why = f"extract_audio to {container.ext}" + (f" of {seconds(duration)}" if duration else "")
    promise = one_kind(source.info, why, duration, video=False)
    return Plan(
        tuple([*args, *output_args(output, container)]),
        (output,),
        duration,
        promise=promise,
    )


def remove_audio(options: RemoveAudioOptions, source: Source, workdir: Path) -> Plan:
    size = require_video(source, "remove_audio")
    duration = require_timeline(source, "remove_audio")
    video = source.info.video
    assert video is not None
    args = [*read(source), "-map", f"0:{video.index}", "-an", "-sn", "-dn"]
    container = _copy_container(source) if options.keep_video_quality else None
    if container is not None:
        args += copy_video(video.codec, container)
        stage = "processing (stream copy)"
    else:
        container = CONTAINERS["mp4"]
        args += reencode_video(size)
        stage = "processing (re-encoding video)"
    output = write(workdir, source, "noaudio", container)
    promise = one_kind(source.info, f"remove_audio of {seconds(duration)}", duration, video=True)
    args += output_args(output, container)
    return Plan(tuple(args), (output,), duration, stage, promise=promise)


def _copy_container(source: Source) -> Container | None:
    """A container that can take the input's video stream as it is, if there is one."""
    video = source.info.video
    if video is None:
        return None
    names = [*COPY_CONTAINERS.get(source.info.demuxer, ()), "mkv"]
    if names[0] == "mkv" and video.codec in ("vp8", "vp9", "av1"):
        names.insert(0, "webm")
    return next((CONTAINERS[n] for n in names if video.codec in CONTAINERS[n].video_codecs), None)


def convert(options: ConvertOptions, source: Source, workdir: Path) -> Plan:
    duration = require_timeline(source, "convert")
    info = source.info
    container = CONTAINERS[options.target_format]
    audio_only = not container.video_codecs
    if audio_only:
        require_audio(source, f"convert to {options.target_format}")
    for kind, wanted, allowed in (
        ("video", options.video_codec, container.video_codecs),
        ("audio", options.audio_codec, container.audio_codecs),
    ):
        if wanted is not None and _codec_name(wanted) not in allowed:
            raise JobError(
                f"{options.target_format} cannot hold {kind} codec {wanted}",
                code=ErrorCode.VALIDATION_ERROR,
                details={"field": f"$.options.{kind}_codec"},
            )
    args = read(source)
    notes = []
    video = None if audio_only else info.video
    if video is not None:
        codec = _codec_name(options.video_codec or "")
        args += ["-map", f"0:{video.index}"]
        hidden = hidden_from_copy(info, video, container)
        if (
            options.stream_copy
            and codec in ("", video.codec)  # none asked for, or the one it already has
            and video.codec in container.video_codecs
            and hidden is None
        ):
            args += copy_video(video.codec, container)
        else:
            if options.stream_copy and options.video_codec is None:
                notes.append(hidden or f"video {video.codec} cannot be copied into {container.ext}")
            args += reencode_video(video.display_size, codec or container.default_video or "h264")
    if info.audio is not None and container.audio_codecs:
        codec = _codec_name(options.audio_codec or "")
        args += ["-map", f"0:{info.audio.index}"]
        hidden = hidden_from_copy(info, info.audio, container)
        if (
            options.stream_copy
            and codec in ("", info.audio.codec)
            and info.audio.codec in container.audio_codecs
            and hidden is None
        ):
            args += ["-c:a", "copy"]
        else:
            if options.stream_copy and options.audio_codec is None:
                notes.append(
                    hidden or f"audio {info.audio.codec} cannot be copied into {container.ext}"
                )
            args += encode_audio(codec or container.default_audio or "aac")
    output = write(workdir, source, "converted", container)
    args += ["-sn", "-dn", *output_args(output, container)]
    stage = f"processing (re-encoding: {'; '.join(notes)})" if notes else "processing"
    why = f"convert to {container.ext} of {seconds(duration)}"
    if audio_only:
        promise = one_kind(info, why, duration, video=False)
    else:
        promise = same_streams(info, why, duration)
    copying = "copy" in args
    if copying and info.demuxer in UNTIMED_DEMUXERS:
        # Generated timestamps fail only where a packet has no decoding time either.
        again = convert(attrs.evolve(options, stream_copy=False), source, workdir)
        reencode = attrs.evolve(again, stage="processing (re-encoding: the input lacks timestamps)")
        return Plan(
            tuple(args),
            (output,),
            duration,
            stage,
            fallback=reencode,
            fallback_on=UNKNOWN_TIMESTAMP,
            promise=promise,
        )
    return Plan(tuple(args), (output,), duration, stage, promise=promise)


def _codec_name(codec: str) -> str:
    return "pcm_s16le" if codec == "pcm" else codec
