"""What every operation shares: the plan it produces, encoders, containers, dimensions.

An operation is a pure function `(options, sources, workdir) -> Plan`: it reads the
probed `MediaInfo` of its inputs and returns the full FFmpeg command and the files it
will produce. Numbers in filter graphs are formatted here from validated floats and
ints; no client text reaches them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import attrs

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.arguments import input_args
from ffserve.ffmpeg.promise import Promise, seconds, slack_of
from ffserve.media.streams import MediaInfo, Stream


@attrs.frozen
class Source:
    path: Path
    info: MediaInfo
    filename: str  # the client's name, used only to name outputs


@attrs.frozen
class Output:
    path: Path
    filename: str  # sent to the client in the binary frame header
    container: str  # reported as output_metadata.format


@attrs.frozen
class Plan:
    args: tuple[str, ...]  # everything after the ffmpeg executable and global options
    outputs: tuple[Output, ...]
    expected_duration: float | None
    stage: str = "processing"
    # Commands to run first (no progress), e.g. turning a subtitle stream into a file.
    before: tuple[tuple[str, ...], ...] = ()
    # Small files of our own to write into the job dir first (name, text).
    files: tuple[tuple[Path, str], ...] = ()
    # The size of the frames it makes, where the options choose it (scale, rotate, a
    # thumbnail's or GIF's width): what the work budget holds to the frame limit.
    frame_size: tuple[int, int] | None = None
    # The plan to run instead when FFmpeg fails saying `fallback_on` (its last resort,
    # e.g. re-encoding what could not be stream-copied), named in its own stage.
    fallback: Plan | None = None
    fallback_on: str = ""
    # What every output must turn out to be, checked on its probe before delivery.
    promise: Promise = attrs.field(kw_only=True)


@attrs.frozen
class Container:
    """An output format: file extension, FFmpeg muxer, and the codecs it can hold."""

    ext: str
    muxer: str
    video_codecs: frozenset[str]
    audio_codecs: frozenset[str]
    default_video: str | None  # codec name, see ENCODERS
    default_audio: str | None


def _c(ext: str, muxer: str, video: str, audio: str, dv: str | None, da: str | None) -> Container:
    return Container(ext, muxer, frozenset(video.split()), frozenset(audio.split()), dv, da)


CONTAINERS: dict[str, Container] = {
    # Not h263 (the mp4 muxer refuses it) nor flac (experimental in mp4 before FFmpeg 6).
    "mp4": _c("mp4", "mp4", "h264 hevc mpeg4 av1 vp9", "aac mp3 opus ac3 alac", "h264", "aac"),
    "mov": _c(
        "mov",
        "mov",
        "h264 hevc mpeg4 h263 prores mjpeg",
        "aac mp3 alac ac3 pcm_s16le",
        "h264",
        "aac",
    ),
    "mkv": _c(
        "mkv",
        "matroska",
        "h264 hevc mpeg4 av1 vp8 vp9 theora mpeg2video h263 mjpeg",
        "aac mp3 opus vorbis flac ac3 pcm_s16le",
        "h264",
        "aac",
    ),
    "webm": _c("webm", "webm", "vp8 vp9 av1", "opus vorbis", "vp9", "opus"),
    "avi": _c("avi", "avi", "h264 mpeg4 mjpeg", "mp3 ac3 pcm_s16le", "h264", "mp3"),
    "ts": _c("ts", "mpegts", "h264 hevc mpeg2video", "aac mp3 ac3 opus", "h264", "aac"),
    "flv": _c("flv", "flv", "h264", "aac mp3", "h264", "aac"),
    "ogv": _c("ogv", "ogg", "theora vp8", "vorbis opus flac", "theora", "vorbis"),
    "3gp": _c("3gp", "3gp", "h264 h263 mpeg4", "aac", "h264", "aac"),
    # Audio-only formats.
    "mp3": _c("mp3", "mp3", "", "mp3", None, "mp3"),
    "aac": _c("aac", "adts", "", "aac", None, "aac"),
    "m4a": _c("m4a", "ipod", "", "aac alac", None, "aac"),
    "wav": _c("wav", "wav", "", "pcm_s16le", None, "pcm_s16le"),
    "flac": _c("flac", "flac", "", "flac", None, "flac"),
    "ogg": _c("ogg", "ogg", "", "vorbis opus flac", None, "vorbis"),
    "opus": _c("opus", "opus", "", "opus", None, "opus"),
}

# Codec name -> encoder arguments. Speed-leaning settings: these are defaults for
# operations whose point is not compression; `compress` sets its own quality.
ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"),
    "hevc": ("libx265", "-preset", "veryfast", "-crf", "24", "-pix_fmt", "yuv420p"),
    "vp9": (
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-row-mt",
        "1",
        "-crf",
        "32",
        "-b:v",
        "0",
        "-pix_fmt",
        "yuv420p",
    ),
    "vp8": (
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-crf",
        "10",
        "-b:v",
        "2M",
        "-pix_fmt",
        "yuv420p",
    ),
    "av1": ("libsvtav1", "-preset", "10", "-crf", "35", "-pix_fmt", "yuv420p"),
    "mpeg4": ("mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p"),
    "theora": ("libtheora", "-q:v", "7", "-pix_fmt", "yuv420p"),
    "aac": ("aac", "-b:a", "160k"),
    "mp3": ("libmp3lame", "-q:a", "2"),
    "opus": ("libopus", "-b:a", "128k"),
    "vorbis": ("libvorbis", "-q:a", "5"),
    "flac": ("flac",),
    "pcm_s16le": ("pcm_s16le",),
    "ac3": ("ac3", "-b:a", "192k"),
    "alac": ("alac",),
}
# Encoders with a bitrate setting (others are lossless or quality-based only).
LOSSY_AUDIO = frozenset({"aac", "mp3", "opus", "vorbis", "ac3"})

# Which audio-only format keeps an audio input in its own family (mp3 stays mp3).
AUDIO_FAMILY = {
    "mp3": "mp3",
    "flac": "flac",
    "vorbis": "ogg",
    "opus": "opus",
    "aac": "m4a",
    "alac": "m4a",
    "pcm_s16le": "wav",
    "pcm_s24le": "wav",
    "pcm_f32le": "wav",
}

MP4_AUDIO_COPY = frozenset({"aac", "mp3"})


def ffmpeg_prefix(ffmpeg: str, threads: int) -> list[str]:
    """Global options: quiet, non-interactive, machine-readable progress on stdout."""
    args = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
    ]
    if threads:
        args += ["-threads", str(threads)]
    return args


# Demuxers whose packets may come without a presentation timestamp: MPEG program streams
# (DVD/SVCD .vob/.mpg) give one only where a PES header carries it, and a muxer given
# a copied packet without one refuses it ("Can't write packet with unknown timestamp").
# `-fflags +genpts` has the demuxer fill them in from the decoding order.
UNTIMED_DEMUXERS = frozenset({"mpeg"})
UNKNOWN_TIMESTAMP = "unknown timestamp"

# The progress stage of a job that seeks an input FFmpeg cannot seek.
DECODING_FROM_START = "processing (decoding from the start: the input has no seek index)"


def read(source: Source, *, seek: float | None = None, duration: float | None = None) -> list[str]:
    """Input options for one source, read from `seek` seconds after its first packet for
    `duration` seconds.

    Where the input can be seeked, an input seek (`-ss` before `-i`): FFmpeg jumps to the
    keyframe before `seek` and decodes from there, frame-accurate when re-encoding. The
    seek is in the file's own timeline (`-seek_timestamp`, from the probe's start time):
    FFmpeg's own relative `-ss` counts from the start of the streams it could open, and an
    operation allowed no audio decoder (thumbnail, gif) would count from the video's start,
    a second late in a file whose audio starts at -1 s. Where the input cannot be seeked
    (`MediaInfo.seekable`), the same options go after `-i`, on the output: the input is
    decoded from its start and the frames before `seek` dropped, slower but right. Output
    options belong to the next output only: a plan with several outputs seeks each itself
    (`thumbnail`).
    """
    info = source.info
    limit = ["-t", num(duration)] if duration is not None else []
    timing = ["-fflags", "+genpts"] if info.demuxer in UNTIMED_DEMUXERS else []
    if info.seekable:
        start = ["-seek_timestamp", "1", "-ss", num(info.start_time + seek)] if seek else []
        return timing + start + limit + input_args(source.path)
    return timing + input_args(source.path) + (["-ss", num(seek)] if seek else []) + limit


def seek_stage(source: Source, stage: str = "processing") -> str:
    """The progress stage of a plan that seeks `source`: says when it decodes from the start."""
    return stage if source.info.seekable else DECODING_FROM_START


# Muxers that write an edit list again for the packets they are given: a stream copy into
# them plays as the input did. Any other container, and the concat demuxer, show every
# stored packet, including what the input's edit list hid.
EDIT_LIST_MUXERS = frozenset({"mp4", "mov", "ipod", "3gp"})


def hidden_from_copy(info: MediaInfo, stream: Stream, container: Container | None) -> str | None:
    """Why a stream copy of `stream` into `container` (None: through the concat demuxer)
    would show what the input's edit list hides, longer than the promise allows; None if
    it would not. Such a stream is re-encoded: decoding honours the edit list."""
    if container is not None and container.muxer in EDIT_LIST_MUXERS:
        return None
    if stream.hidden_s <= slack_of(info):
        return None  # encoder priming and the like: within a frame or two
    into = f"a copy into {container.ext}" if container else "a joined copy"
    hidden = seconds(stream.hidden_s)
    return f"an edit list hides {hidden} of the {stream.kind}, which {into} would show"


def encode_video(codec: str = "h264") -> list[str]:
    return ["-c:v", *ENCODERS[codec]]


def copy_video(codec: str, container: Container) -> list[str]:
    """Stream-copy the video; AVI needs H.264 in Annex B form, as MP4/MKV do not store it
    (the filter passes Annex B input through unchanged)."""
    if container.muxer == "avi" and codec == "h264":
        return ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"]
    return ["-c:v", "copy"]


def encode_audio(codec: str = "aac", bitrate_kbps: int | None = None) -> list[str]:
    encoder = list(ENCODERS[codec])
    if bitrate_kbps is not None and codec in LOSSY_AUDIO:
        encoder = [
            a
            for i, a in enumerate(encoder)
            if a not in ("-b:a", "-q:a") and (i == 0 or encoder[i - 1] not in ("-b:a", "-q:a"))
        ]
        encoder += ["-b:a", f"{bitrate_kbps}k"]
    return ["-c:a", *encoder]


def write(
    workdir: Path, source: Source, suffix: str, container: Container, *, index: int | None = None
) -> Output:
    """An output file in the job's dir; its client-facing name comes from the input's."""
    stem = safe_stem(source.filename)
    number = f"_{index:02d}" if index is not None else ""
    name = f"{stem}_{suffix}{number}.{container.ext}"
    return Output(workdir / f"output{number}.{container.ext}", name, container.ext)


def output_args(output: Output, container: Container) -> list[str]:
    args = ["-f", container.muxer]
    if container.muxer in ("mp4", "mov", "ipod", "3gp"):
        args += ["-movflags", "+faststart"]
    return [*args, f"file:{output.path}"]


def safe_stem(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name.rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:64]
    return stem or "output"


def num(value: float) -> str:
    """A number for an FFmpeg argument: plain decimal, never exponent, inf or nan."""
    if not math.isfinite(value):
        raise ValueError("non-finite number in an FFmpeg argument")
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def fit_within(
    size: tuple[int, int], width: int | None, height: int | None, *, shrink_only: bool = False
) -> tuple[int, int]:
    """Scale `size` to `width` and/or `height`, keeping aspect ratio, even dimensions."""
    w, h = size
    scales = []
    if width is not None:
        scales.append(width / w)
    if height is not None:
        scales.append(height / h)
    scale = min(scales) if scales else 1.0
    if shrink_only:
        scale = min(scale, 1.0)
    return even(round(w * scale)), even(round(h * scale))


def require_video(source: Source, operation: str) -> tuple[int, int]:
    """The displayed size of the input's video, or a clear error if it has none."""
    video = source.info.video
    size = video.display_size if video else None
    if video is None or size is None:
        raise JobError(
            f"{operation} needs a video stream and the input has none",
            code=ErrorCode.NO_VIDEO_STREAM,
        )
    return size


def require_audio(source: Source, operation: str) -> None:
    if source.info.audio is None:
        raise JobError(
            f"{operation} needs an audio stream and the input has none",
            code=ErrorCode.NO_AUDIO_STREAM,
        )


def require_timeline(source: Source, operation: str) -> float:
    """The input's duration; a still image, a file without one, or one with neither audio
    nor video (subtitles or data alone) cannot be retimed or transcoded."""
    info = source.info
    duration = info.duration
    if info.is_image:
        raise JobError(
            f"{operation} needs audio or video with a duration; the input is a still image",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    if duration is None:
        raise JobError(
            f"{operation} needs audio or video with a duration; the input states none "
            "and reading its packets found none",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    if info.video is None and info.audio is None:
        raise JobError(
            f"{operation} needs audio or video; the input has neither",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    return duration


def even_fix(size: tuple[int, int]) -> list[str]:
    """A scale filter when the size is odd: H.264 in 4:2:0 needs even dimensions."""
    w, h = size
    return [] if w % 2 == 0 and h % 2 == 0 else [f"scale={even(w)}:{even(h)}"]


def reencode_video(size: tuple[int, int] | None, codec: str = "h264") -> list[str]:
    """Encode the video as it is, scaled to an even size first when it is odd."""
    vf = even_fix(size or (2, 2))
    return [*(["-filter:v", ",".join(vf)] if vf else []), *encode_video(codec)]


def audio_family(source: Source) -> Container:
    """The audio-only container that keeps an audio input in its own family."""
    audio = source.info.audio
    name = AUDIO_FAMILY.get(audio.codec, "m4a") if audio else "m4a"
    return CONTAINERS[name]


def video_maps(source: Source) -> list[str]:
    """Map the first real video stream and the first audio stream, if any."""
    info = source.info
    args = []
    if info.video is not None:
        args += ["-map", f"0:{info.video.index}"]
    if info.audio is not None:
        args += ["-map", f"0:{info.audio.index}"]
    return args
