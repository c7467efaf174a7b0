"""The helpers every planner shares, and the dispatch in `build_plan`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops import MULTI, SINGLE, build_plan, ffmpeg_prefix, inputs_expected
from ffserve.ffmpeg.ops.common import (
    CONTAINERS,
    audio_family,
    copy_video,
    encode_audio,
    even,
    even_fix,
    fit_within,
    num,
    output_args,
    read,
    reencode_video,
    require_audio,
    require_timeline,
    require_video,
    safe_stem,
    video_maps,
    write,
)
from ffserve.media.streams import MediaInfo
from ffserve.wire.options import OPERATIONS, parse_options
from tests.ffmpeg.ops.media import (
    FLAC,
    FORMATS,
    MKV_SUBS,
    MP3,
    MP4,
    OGG,
    PNG,
    ROTATED,
    SILENT,
    SRT,
    WAV,
    audio,
    info,
    source,
)

WHITELISTED = ["-protocol_whitelist", "file", "-format_whitelist", FORMATS]


@pytest.mark.parametrize(
    ("seek", "duration", "expected"),
    [
        pytest.param(None, None, [*WHITELISTED, "-i", "file:/jobs/j1/input"], id="plain"),
        pytest.param(0.0, None, [*WHITELISTED, "-i", "file:/jobs/j1/input"], id="seek-0-omitted"),
        pytest.param(
            1.5,
            None,
            ["-seek_timestamp", "1", "-ss", "1.5", *WHITELISTED, "-i", "file:/jobs/j1/input"],
            id="seek",
        ),
        pytest.param(
            None, 2.0, ["-t", "2", *WHITELISTED, "-i", "file:/jobs/j1/input"], id="duration"
        ),
        pytest.param(
            8.25,
            0.5,
            [
                *("-seek_timestamp", "1", "-ss", "8.25", "-t", "0.5"),
                *(*WHITELISTED, "-i", "file:/jobs/j1/input"),
            ],
            id="seek-and-duration",
        ),
    ],
)
def test_read(seek: float | None, duration: float | None, expected: list[str]) -> None:
    assert read(source(MP4), seek=seek, duration=duration) == expected


@pytest.mark.parametrize(
    ("start_time", "position"),
    [
        pytest.param(5.0, "6.5", id="first-packet-at-5s"),
        pytest.param(-1.021, "0.479", id="first-packet-at-minus-1s"),
    ],
)
def test_read_seeks_from_the_first_packet(start_time: float, position: str) -> None:
    """A seek counts from the content's first packet, in the file's own timeline: not
    from where FFmpeg thinks the file starts, which depends on the decoders it may open."""
    media = attrs.evolve(MP4, start_time=start_time)
    args = read(source(media), seek=1.5)
    assert args[:4] == ["-seek_timestamp", "1", "-ss", position]


def test_read_whitelists_exactly_the_media_and_subtitle_demuxers() -> None:
    formats = read(source(MP4))[3].split(",")
    # No playlist, concat, image-sequence, device or raw demuxer may be reachable.
    for forbidden in ("hls", "dash", "concat", "image2", "lavfi", "tty", "data", "rawvideo"):
        assert forbidden not in formats
    assert formats == FORMATS.split(",")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(2, "2", id="int"),
        pytest.param(100.0, "100", id="trailing-zeros"),
        pytest.param(0.1 + 0.2, "0.3", id="float-noise"),
        pytest.param(1 / 3, "0.333333", id="six-places"),
        pytest.param(1e7, "10000000", id="no-exponent-large"),
        pytest.param(2.5e-6, "0.000003", id="no-exponent-small"),
        pytest.param(1e-7, "0", id="rounds-to-zero"),
        pytest.param(-1e-7, "0", id="no-negative-zero"),
        pytest.param(0, "0", id="zero"),
        pytest.param(-1.5, "-1.5", id="negative"),
    ],
)
def test_num(value: float, expected: str) -> None:
    assert num(value) == expected


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_num_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        num(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(4, 4, id="even"),
        pytest.param(3, 2, id="odd-down"),
        pytest.param(1081, 1080, id="odd-large"),
        pytest.param(5.9, 4, id="float-truncated"),
        pytest.param(1, 2, id="at-least-2"),
        pytest.param(0, 2, id="zero"),
        pytest.param(-4, 2, id="negative"),
    ],
)
def test_even(value: float, expected: int) -> None:
    assert even(value) == expected


@pytest.mark.parametrize(
    ("size", "width", "height", "shrink_only", "expected"),
    [
        pytest.param((1280, 720), 640, None, False, (640, 360), id="width"),
        pytest.param((1280, 720), None, 100, False, (178, 100), id="height-evened"),
        pytest.param((1920, 1080), 640, 200, False, (356, 200), id="tighter-side-wins"),
        pytest.param((1280, 720), 4000, None, False, (4000, 2250), id="enlarges"),
        pytest.param((1280, 720), 4000, None, True, (1280, 720), id="shrink-only"),
        pytest.param((1280, 720), 640, None, True, (640, 360), id="shrink-only-shrinks"),
        pytest.param((321, 241), None, None, False, (320, 240), id="no-limit-evens"),
        pytest.param((100, 100), 33, None, False, (32, 32), id="odd-limit-evened"),
        pytest.param((1080, 1920), 100, 100, False, (56, 100), id="portrait-box"),
    ],
)
def test_fit_within(
    size: tuple[int, int],
    width: int | None,
    height: int | None,
    shrink_only: bool,
    expected: tuple[int, int],
) -> None:
    assert fit_within(size, width, height, shrink_only=shrink_only) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        pytest.param("clip.mp4", "clip", id="plain"),
        pytest.param("archive.tar.gz", "archive.tar", id="last-extension-only"),
        pytest.param("noext", "noext", id="no-extension"),
        pytest.param("../../etc/passwd", "passwd", id="no-directories"),
        pytest.param("C:\\Users\\me\\My Video.final.mov", "My_Video.final", id="windows-path"),
        pytest.param("name with ;rm -rf.mp4", "name_with_rm_-rf", id="shell-characters"),
        pytest.param("$(reboot).mp4", "reboot", id="substitution-stripped"),
        pytest.param("vidéo 🎬.mkv", "vid_o", id="non-ascii"),
        pytest.param("a" * 100 + ".mp4", "a" * 64, id="capped-at-64"),
        pytest.param("...", "output", id="only-dots"),
        pytest.param("", "output", id="empty"),
    ],
)
def test_safe_stem(filename: str, expected: str) -> None:
    assert safe_stem(filename) == expected


@pytest.mark.parametrize(
    ("codec", "kbps", "expected"),
    [
        pytest.param("aac", None, ["-c:a", "aac", "-b:a", "160k"], id="aac"),
        pytest.param("aac", 96, ["-c:a", "aac", "-b:a", "96k"], id="aac-bitrate-replaced"),
        pytest.param("mp3", None, ["-c:a", "libmp3lame", "-q:a", "2"], id="mp3-vbr"),
        pytest.param("mp3", 256, ["-c:a", "libmp3lame", "-b:a", "256k"], id="mp3-quality-replaced"),
        pytest.param("vorbis", 64, ["-c:a", "libvorbis", "-b:a", "64k"], id="vorbis"),
        pytest.param("opus", 24, ["-c:a", "libopus", "-b:a", "24k"], id="opus"),
        pytest.param("ac3", None, ["-c:a", "ac3", "-b:a", "192k"], id="ac3"),
        pytest.param("flac", 96, ["-c:a", "flac"], id="lossless-ignores-bitrate"),
        pytest.param("pcm_s16le", 96, ["-c:a", "pcm_s16le"], id="pcm-ignores-bitrate"),
        pytest.param("alac", None, ["-c:a", "alac"], id="alac"),
    ],
)
def test_encode_audio(codec: str, kbps: int | None, expected: list[str]) -> None:
    assert encode_audio(codec, kbps) == expected


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param("mp4", ["-f", "mp4", "-movflags", "+faststart"], id="mp4"),
        pytest.param("mov", ["-f", "mov", "-movflags", "+faststart"], id="mov"),
        pytest.param("m4a", ["-f", "ipod", "-movflags", "+faststart"], id="m4a"),
        pytest.param("3gp", ["-f", "3gp", "-movflags", "+faststart"], id="3gp"),
        pytest.param("mkv", ["-f", "matroska"], id="mkv"),
        pytest.param("webm", ["-f", "webm"], id="webm"),
        pytest.param("ts", ["-f", "mpegts"], id="ts"),
        pytest.param("aac", ["-f", "adts"], id="aac"),
        pytest.param("ogv", ["-f", "ogg"], id="ogv"),
    ],
)
def test_output_args(container: str, expected: list[str]) -> None:
    target = CONTAINERS[container]
    output = write(Path("/jobs/j1"), source(MP4), "x", target)
    assert output_args(output, target) == [*expected, f"file:/jobs/j1/output.{target.ext}"]


@pytest.mark.parametrize(
    ("filename", "index", "path", "name"),
    [
        pytest.param("clip.mp4", None, "/jobs/j1/output.mkv", "clip_speed.mkv", id="single"),
        pytest.param("clip.mp4", 3, "/jobs/j1/output_03.mkv", "clip_speed_03.mkv", id="numbered"),
        pytest.param("../x/a b.mov", 12, "/jobs/j1/output_12.mkv", "a_b_speed_12.mkv", id="named"),
        pytest.param("", None, "/jobs/j1/output.mkv", "output_speed.mkv", id="no-name"),
    ],
)
def test_write(filename: str, index: int | None, path: str, name: str) -> None:
    # The path on disk is ours alone; the client's name only shapes the filename it is sent.
    output = write(Path("/jobs/j1"), source(MP4, filename), "speed", CONTAINERS["mkv"], index=index)
    assert (str(output.path), output.filename, output.container) == (path, name, "mkv")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param((640, 360), [], id="even"),
        pytest.param((321, 241), ["scale=320:240"], id="both-odd"),
        pytest.param((640, 361), ["scale=640:360"], id="height-odd"),
        pytest.param((1, 1), ["scale=2:2"], id="tiny"),
    ],
)
def test_even_fix(size: tuple[int, int], expected: list[str]) -> None:
    assert even_fix(size) == expected


@pytest.mark.parametrize(
    ("size", "codec", "expected"),
    [
        pytest.param(
            (640, 360),
            "h264",
            ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"],
            id="even-h264",
        ),
        pytest.param(
            (321, 241),
            "mpeg4",
            ["-filter:v", "scale=320:240", "-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p"],
            id="odd-mpeg4",
        ),
        pytest.param(
            None,
            "theora",
            ["-c:v", "libtheora", "-q:v", "7", "-pix_fmt", "yuv420p"],
            id="unknown-size",
        ),
    ],
)
def test_reencode_video(size: tuple[int, int] | None, codec: str, expected: list[str]) -> None:
    assert reencode_video(size, codec) == expected


@pytest.mark.parametrize(
    ("codec", "container", "expected"),
    [
        pytest.param("h264", "avi", ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"], id="h264-avi"),
        pytest.param("h264", "mp4", ["-c:v", "copy"], id="h264-mp4"),
        pytest.param("mpeg4", "avi", ["-c:v", "copy"], id="mpeg4-avi"),
        pytest.param("h264", "ts", ["-c:v", "copy"], id="h264-ts"),
    ],
)
def test_copy_video(codec: str, container: str, expected: list[str]) -> None:
    assert copy_video(codec, CONTAINERS[container]) == expected


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        pytest.param(MP3, "mp3", id="mp3"),
        pytest.param(FLAC, "flac", id="flac"),
        pytest.param(OGG, "ogg", id="vorbis"),
        pytest.param(WAV, "wav", id="pcm"),
        pytest.param(info("wav", 1.0, audio("pcm_s24le", index=0)), "wav", id="pcm-24"),
        pytest.param(info("ogg", 1.0, audio("opus", index=0)), "opus", id="opus"),
        pytest.param(MP4, "m4a", id="aac"),
        pytest.param(info("asf", 1.0, audio("wmav2", index=0)), "m4a", id="unknown-to-m4a"),
        pytest.param(SILENT, "m4a", id="no-audio"),
    ],
)
def test_audio_family(media: MediaInfo, expected: str) -> None:
    assert audio_family(source(media)) is CONTAINERS[expected]


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        pytest.param(MP4, ["-map", "0:0", "-map", "0:1"], id="both"),
        pytest.param(SILENT, ["-map", "0:0"], id="video-only"),
        pytest.param(MP3, ["-map", "0:1"], id="cover-art-is-not-video"),
        pytest.param(SRT, [], id="neither"),
    ],
)
def test_video_maps(media: MediaInfo, expected: list[str]) -> None:
    assert video_maps(source(media)) == expected


@pytest.mark.parametrize(
    ("threads", "extra"),
    [pytest.param(0, [], id="auto-threads"), pytest.param(2, ["-threads", "2"], id="threads")],
)
def test_ffmpeg_prefix(threads: int, extra: list[str]) -> None:
    assert ffmpeg_prefix("/usr/bin/ffmpeg", threads) == [
        "/usr/bin/ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
        *extra,
    ]


def test_require_helpers() -> None:
    assert require_video(source(ROTATED), "x") == (1080, 1920)  # displayed size
    assert require_timeline(source(MP4), "x") == 10.0
    require_audio(source(MP4), "x")
    for check, media, code in [
        (require_video, WAV, ErrorCode.NO_VIDEO_STREAM),
        (require_video, MP3, ErrorCode.NO_VIDEO_STREAM),
        (require_audio, SILENT, ErrorCode.NO_AUDIO_STREAM),
        (require_timeline, PNG, ErrorCode.UNSUPPORTED_MEDIA),
    ]:
        with pytest.raises(JobError) as caught:
            check(source(media), "x")
        assert caught.value.code == code


def test_every_operation_has_a_planner() -> None:
    assert set(SINGLE) | set(MULTI) | {"probe"} == set(OPERATIONS)
    assert not set(SINGLE) & set(MULTI)


@pytest.mark.parametrize(
    ("operation", "raw", "expected"),
    [
        pytest.param("concat", {"file_count": 7}, 7, id="concat"),
        pytest.param("burn_subtitles", {"subtitle_upload": True}, 2, id="burn-upload"),
        pytest.param("burn_subtitles", {}, 1, id="burn-own-stream"),
        pytest.param("speed", {"speed_factor": 2}, 1, id="single"),
    ],
)
def test_inputs_expected(operation: str, raw: dict[str, Any], expected: int) -> None:
    assert inputs_expected(parse_options(operation, raw)) == expected


def test_build_plan_gives_multi_operations_every_source() -> None:
    # burn_subtitles with an upload reads the second source; a single operation the first.
    options = parse_options("burn_subtitles", {"subtitle_upload": True})
    sources = [source(MKV_SUBS, path="input_00"), source(SRT, path="input_01")]
    plan = build_plan("burn_subtitles", options, sources, Path("/jobs/j1"))
    assert "file:/jobs/j1/input_01" in plan.before[0]
    single = build_plan("remove_audio", parse_options("remove_audio", {}), sources, Path("/w"))
    assert "file:/jobs/j1/input_00" in single.args
