"""extract_subtitles and burn_subtitles: exact FFmpeg arguments, the prepare step, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from ffserve.errors import ErrorCode
from ffserve.ffmpeg.ops import Source
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    AAC,
    MKV_SUBS,
    MP4,
    MP4_FORMAT,
    ODD,
    PNG,
    SRT,
    VP9,
    WAV,
    X264,
    assert_inputs_guarded,
    audio,
    info,
    out,
    outputs,
    plan,
    reading,
    refusal,
    source,
    subtitle,
    video,
)

EXTRACT_CASES = [
    pytest.param(
        {},
        # Subtitle 0 is stream 2 (after video and audio).
        ["-copyts", "-map", "0:2", "-c:s", "srt", "-f", "srt", out("output.srt")],
        ("/jobs/j1/output.srt", "clip_subs.srt", "srt"),
        id="first-as-srt",
    ),
    pytest.param(
        {"format": "ass"},
        ["-copyts", "-map", "0:2", "-c:s", "ass", "-f", "ass", out("output.ass")],
        ("/jobs/j1/output.ass", "clip_subs.ass", "ass"),
        id="first-as-ass",
    ),
    pytest.param(
        {"subtitle_index": 2, "format": "vtt"},
        # Subtitle 2 (counting subtitle streams only) is stream 4.
        ["-copyts", "-map", "0:4", "-c:s", "webvtt", "-f", "webvtt", out("output.vtt")],
        ("/jobs/j1/output.vtt", "clip_subs.vtt", "vtt"),
        id="third-as-vtt",
    ),
]


@pytest.mark.parametrize(("raw", "tail", "output"), EXTRACT_CASES)
def test_extract_subtitles(
    raw: dict[str, Any], tail: list[str], output: tuple[str, str, str]
) -> None:
    result = plan("extract_subtitles", raw, source(MKV_SUBS, "Film (2001).mkv"))
    assert list(result.args) == [*reading(), *tail]
    assert outputs(result) == [(output[0], output[1].replace("clip", "Film_2001"), output[2])]
    assert result.expected_duration is None
    assert result.before == () and result.files == ()
    assert_inputs_guarded(result.args)


def test_extract_from_mov_text() -> None:
    media = info(MP4_FORMAT, 5.0, video(), audio(), subtitle("mov_text", index=2))
    result = plan("extract_subtitles", {"format": "srt"}, media)
    assert list(result.args) == [
        *reading(),
        "-copyts",
        "-map",
        "0:2",
        "-c:s",
        "srt",
        "-f",
        "srt",
        out("output.srt"),
    ]


def prepare(name: str, stream: int) -> tuple[str, ...]:
    """The run before the burn: one text subtitle stream into subs.ass in the job dir."""
    return (*reading(name), "-map", f"0:{stream}", "-c:s", "ass", "-f", "ass", out("subs.ass"))


OPUS_MKV = info("matroska,webm", 6.0, video(width=640, height=360), audio("opus"))
MP3_MOV = info(MP4_FORMAT, 6.0, video(), audio("mp3", 44100))


def pair(media: MediaInfo, name: str = "clip.mp4") -> list[Source]:
    """A video upload and a subtitle upload, named as intake names them."""
    return [source(media, name, "input_00"), source(SRT, "subs.srt", "input_01")]


BURN_CASES = [
    pytest.param(
        {},
        [source(MKV_SUBS)],
        # ass= names our own file, relative to the job dir the run starts in.
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *X264,
            "-map",
            "0:1",
            "-c:a",
            "copy",
            "-sn",
            "-dn",
            "-f",
            "mp4",
            "-movflags",
            "+faststart",
            out("output.mp4"),
        ],
        prepare("input", 2),
        ("/jobs/j1/output.mp4", "clip_subtitled.mp4", "mp4"),
        6.0,
        id="own-stream-mp4",
    ),
    pytest.param(
        {"subtitle_index": 2, "format": "webm"},
        [source(MKV_SUBS)],
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *VP9,
            "-map",
            "0:1",
            "-c:a",
            "libopus",
            "-b:a",
            "128k",
            "-sn",
            "-dn",
            "-f",
            "webm",
            out("output.webm"),
        ],
        prepare("input", 4),
        ("/jobs/j1/output.webm", "clip_subtitled.webm", "webm"),
        6.0,
        id="own-third-stream-webm",
    ),
    pytest.param(
        {"subtitle_upload": True, "format": "mkv"},
        pair(ODD, "odd.mov"),
        # The odd 321x241 frame is evened after the subtitles are drawn.
        [
            *reading("input_00"),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass,scale=320:240",
            *X264,
            "-map",
            "0:1",
            "-c:a",
            "copy",
            "-sn",
            "-dn",
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        prepare("input_01", 0),
        ("/jobs/j1/output.mkv", "odd_subtitled.mkv", "mkv"),
        1.0,
        id="upload-odd-size-mkv",
    ),
    pytest.param(
        {"subtitle_upload": True, "subtitle_index": 5},
        pair(MKV_SUBS),
        # An upload has one stream: subtitle_index is about the video's own streams.
        [
            *reading("input_00"),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *X264,
            "-map",
            "0:1",
            "-c:a",
            "copy",
            "-sn",
            "-dn",
            "-f",
            "mp4",
            "-movflags",
            "+faststart",
            out("output.mp4"),
        ],
        prepare("input_01", 0),
        ("/jobs/j1/output.mp4", "clip_subtitled.mp4", "mp4"),
        6.0,
        id="upload-instead-of-own-streams",
    ),
    pytest.param(
        {"subtitle_upload": True, "format": "mov"},
        pair(MP3_MOV),
        [
            *reading("input_00"),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *X264,
            "-map",
            "0:1",
            "-c:a",
            "copy",
            "-sn",
            "-dn",
            "-f",
            "mov",
            "-movflags",
            "+faststart",
            out("output.mov"),
        ],
        prepare("input_01", 0),
        ("/jobs/j1/output.mov", "clip_subtitled.mov", "mov"),
        6.0,
        id="upload-mp3-audio-copied-into-mov",
    ),
    pytest.param(
        {"subtitle_upload": True},
        pair(OPUS_MKV),
        [
            *reading("input_00"),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *X264,
            "-map",
            "0:1",
            *AAC,
            "-sn",
            "-dn",
            "-f",
            "mp4",
            "-movflags",
            "+faststart",
            out("output.mp4"),
        ],
        prepare("input_01", 0),
        ("/jobs/j1/output.mp4", "clip_subtitled.mp4", "mp4"),
        6.0,
        id="upload-opus-audio-encoded",
    ),
    pytest.param(
        {"subtitle_upload": True, "format": "webm"},
        [source(info(MP4_FORMAT, 2.0, video()), "v.mp4", "input_00"), pair(MP4)[1]],
        [
            *reading("input_00"),
            "-map",
            "0:0",
            "-filter:v",
            "ass=subs.ass",
            *VP9,
            "-sn",
            "-dn",
            "-f",
            "webm",
            out("output.webm"),
        ],
        prepare("input_01", 0),
        ("/jobs/j1/output.webm", "v_subtitled.webm", "webm"),
        2.0,
        id="upload-video-without-audio-webm",
    ),
]


@pytest.mark.parametrize(("raw", "sources", "args", "before", "output", "duration"), BURN_CASES)
def test_burn_subtitles(
    raw: dict[str, Any],
    sources: list[Source],
    args: list[str],
    before: tuple[str, ...],
    output: tuple[str, str, str],
    duration: float,
) -> None:
    result = plan("burn_subtitles", raw, *sources)
    assert list(result.args) == args
    assert result.before == (before,)
    assert outputs(result) == [output]
    assert result.expected_duration == duration
    assert result.files == ()
    assert_inputs_guarded(result.args)
    assert_inputs_guarded(result.before[0])


@pytest.mark.parametrize(
    ("operation", "raw", "sources", "code", "details"),
    [
        pytest.param(
            "extract_subtitles",
            {"subtitle_index": 3},
            [source(MKV_SUBS)],
            ErrorCode.NO_SUBTITLE_STREAM,
            {"field": "$.options.subtitle_index", "subtitle_streams": 3},
            id="extract-index-past-the-last",
        ),
        pytest.param(
            "extract_subtitles",
            {},
            [source(MP4)],
            ErrorCode.NO_SUBTITLE_STREAM,
            {"field": "$.options.subtitle_index", "subtitle_streams": 0},
            id="extract-none-at-all",
        ),
        pytest.param(
            "extract_subtitles",
            {"subtitle_index": 1},
            [source(MKV_SUBS)],
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="extract-picture-subtitles",
        ),
        pytest.param(
            "burn_subtitles",
            {},
            [source(MP4)],
            ErrorCode.NO_SUBTITLE_STREAM,
            {"field": "$.options.subtitle_index", "subtitle_streams": 0},
            id="burn-no-own-subtitles",
        ),
        pytest.param(
            "burn_subtitles",
            {"subtitle_index": 1},
            [source(MKV_SUBS)],
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="burn-picture-subtitles",
        ),
        pytest.param(
            "burn_subtitles",
            {"subtitle_upload": True},
            [source(MP4, "a.mp4", "input_00"), source(WAV, "subs.srt", "input_01")],
            ErrorCode.INVALID_MEDIA,
            {"input": 1},
            id="burn-upload-not-subtitles",
        ),
        pytest.param(
            "burn_subtitles",
            {"subtitle_upload": True},
            [source(WAV, "a.wav", "input_00"), source(SRT, "subs.srt", "input_01")],
            ErrorCode.NO_VIDEO_STREAM,
            None,
            id="burn-onto-audio",
        ),
        pytest.param(
            "burn_subtitles",
            {"subtitle_upload": True},
            [source(PNG, "a.png", "input_00"), source(SRT, "subs.srt", "input_01")],
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="burn-onto-image",
        ),
    ],
)
def test_refusals(
    operation: str,
    raw: dict[str, Any],
    sources: list[Source],
    code: str,
    details: dict[str, Any] | None,
) -> None:
    error = refusal(operation, raw, *sources)
    assert error.code == code
    assert error.details == details
