"""The `concat` operation: join 2-50 uploads end to end.

Inputs whose streams match exactly (codec, size, frame rate, sample rate, channels) in a
container with binary magic at byte 0 (MP4/MOV, Matroska) are joined by stream copy
through a concat list we write ourselves. Anything else is normalised in one filter graph:
every video scaled and padded to the first input's size, one frame rate, one sample rate
and layout, and silence generated for inputs without audio, so the result plays through.
"""

from __future__ import annotations

from pathlib import Path

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    Container,
    Plan,
    Source,
    encode_audio,
    encode_video,
    even,
    hidden_from_copy,
    num,
    output_args,
    read,
    write,
)
from ffserve.ffmpeg.promise import Promise, seconds, slack_of
from ffserve.media.streams import MediaInfo, Stream
from ffserve.wire.options import ConcatOptions

# Demuxers that need magic bytes at offset 0, so a file that probed as one of them cannot
# also parse as a concat script when the concat demuxer opens it.
COPYABLE_DEMUXERS = {"mov": "mp4", "matroska": "mkv"}
AUDIO_RATE = 48000
MAX_FPS = 60.0


def _signature(stream: Stream | None) -> tuple[object, ...] | None:
    if stream is None:
        return None
    return (
        stream.codec,
        stream.profile,
        stream.width,
        stream.height,
        stream.fps,
        stream.sample_rate,
        stream.channels,
        stream.rotation,
    )


def _layout(info: MediaInfo) -> tuple[tuple[int, str], ...]:
    return tuple((s.index, s.kind) for s in info.streams)


def can_copy(sources: list[Source]) -> bool:
    first = sources[0].info
    if first.demuxer not in COPYABLE_DEMUXERS or first.video is None:
        return False
    # The concat demuxer pairs the files' streams up by index: a copy needs every file's
    # streams in the same order, or audio and video packets are mixed up.
    layout = _layout(first)
    return all(
        s.info.demuxer == first.demuxer
        and _layout(s.info) == layout
        and _signature(s.info.video) == _signature(first.video)
        and _signature(s.info.audio) == _signature(first.audio)
        and s.info.duration is not None
        and not _hides(s.info)
        for s in sources
    )


def _hides(info: MediaInfo) -> bool:
    """Whether the input's edit list hides media the concat demuxer would show: it passes
    every stored packet on, even into MP4. Such inputs are joined by re-encoding."""
    return any(
        hidden_from_copy(info, stream, None) is not None
        for stream in (info.video, info.audio)
        if stream is not None
    )


def concat(options: ConcatOptions, sources: list[Source], workdir: Path) -> Plan:
    if len(sources) != options.file_count:
        raise JobError(f"concat expected {options.file_count} inputs, got {len(sources)}")
    for n, source in enumerate(sources):
        if source.info.is_image or source.info.duration is None:
            raise JobError(
                f"concat input {n} is a still image or has no duration",
                code=ErrorCode.UNSUPPORTED_MEDIA,
                details={"input": n},
            )
    if sources[0].info.video is not None:
        for n, source in enumerate(sources):
            if source.info.video is None:
                raise JobError(
                    f"concat input {n} has no video stream; the first input has one",
                    code=ErrorCode.NO_VIDEO_STREAM,
                    details={"input": n},
                )
    total = sum(s.info.duration or 0.0 for s in sources)
    if can_copy(sources):
        return _copy_plan(sources, workdir, total)
    return _normalise_plan(sources, workdir, total)


def _copy_plan(sources: list[Source], workdir: Path, total: float) -> Plan:
    listing = workdir / "concat.txt"
    # Our own file names (input_00 ...), relative, so the demuxer's safe mode holds. Each
    # with the duration of its content: the demuxer would place the next file after the
    # container's stated duration, which for Matroska and MP4 counts from 0, not from the
    # first packet (a gap of 5 s after a file starting at 5 s).
    text = "ffconcat version 1.0\n" + "".join(
        f"file '{s.path.name}'\nduration {num(s.info.duration or 0.0)}\n" for s in sources
    )
    first = sources[0].info
    name = COPYABLE_DEMUXERS[first.demuxer]
    if name == "mkv" and _holds(CONTAINERS["webm"], first):
        name = "webm"
    if name == "mp4" and not _holds(CONTAINERS["mp4"], first):
        name = "mov"  # PCM audio from a MOV, which MP4 cannot hold
    container = CONTAINERS[name]
    output = write(workdir, sources[0], "joined", container)
    args = [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "concat,mov,matroska",
        "-f",
        "concat",
        "-safe",
        "1",
        "-i",
        f"file:{listing}",
        "-map",
        "0:v:0",
    ]
    if first.audio is not None:
        args += ["-map", "0:a:0"]
    args += ["-c", "copy", *output_args(output, container)]
    promise = _promise(sources, total, audio=first.audio is not None)
    return Plan(
        tuple(args),
        (output,),
        total,
        "processing (stream copy)",
        files=((listing, text),),
        promise=promise,
    )


def _holds(container: Container, info: MediaInfo) -> bool:
    video, audio = info.video, info.audio
    return (video is None or video.codec in container.video_codecs) and (
        audio is None or audio.codec in container.audio_codecs
    )


def _normalise_plan(sources: list[Source], workdir: Path, total: float) -> Plan:
    first = sources[0].info
    has_video = first.video is not None
    has_audio = any(s.info.audio is not None for s in sources)
    args: list[str] = []
    for source in sources:
        args += read(source)
    graph: list[str] = []
    pads = ""
    if has_video:
        assert first.video is not None
        w, h = (even(d) for d in first.video.display_size or (640, 360))
        fps = min(first.video.fps or 30.0, MAX_FPS)
    for n, source in enumerate(sources):
        length = num(source.info.duration or 0.0)
        if has_video:
            video = source.info.video
            assert video is not None
            graph.append(
                f"[{n}:{video.index}]scale={w}:{h}:force_original_aspect_ratio=decrease,"
                f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={num(fps)},format=yuv420p,"
                f"trim=duration={length},setpts=PTS-STARTPTS[v{n}]"
            )
            pads += f"[v{n}]"
        if has_audio:
            audio = source.info.audio
            layout = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
            if audio is None:
                graph.append(f"anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=duration={length}[a{n}]")
            else:
                # Pad or cut each input's audio to its own duration, so the joints stay in sync.
                graph.append(
                    f"[{n}:{audio.index}]aresample={AUDIO_RATE},{layout},apad,"
                    f"atrim=duration={length},asetpts=PTS-STARTPTS[a{n}]"
                )
            pads += f"[a{n}]"
    outs = ("[v]" if has_video else "") + ("[a]" if has_audio else "")
    graph.append(f"{pads}concat=n={len(sources)}:v={int(has_video)}:a={int(has_audio)}{outs}")
    args += ["-filter_complex", ";".join(graph)]
    if has_video:
        container = CONTAINERS["mp4"]
        args += ["-map", "[v]", *encode_video()]
    else:
        container = CONTAINERS["m4a"]
    if has_audio:
        args += ["-map", "[a]", *encode_audio()]
    output = write(workdir, sources[0], "joined", container)
    args += output_args(output, container)
    promise = _promise(sources, total, audio=has_audio)
    return Plan(tuple(args), (output,), total, "processing (normalising inputs)", promise=promise)


def _promise(sources: list[Source], total: float, *, audio: bool) -> Promise:
    return Promise(
        f"concat of {len(sources)} inputs, {seconds(total)} in all",
        total,
        slack_of(*(s.info for s in sources)),
        video=sources[0].info.video is not None,
        audio=audio,
    )
