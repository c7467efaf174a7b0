"""speed and trim: options and a probed input in, the exact FFmpeg arguments out."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from ffserve.errors import ErrorCode
from ffserve.ffmpeg.ops.retime import atempo_chain
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    AAC,
    FLAC,
    MP3,
    MP3_Q2,
    MP4,
    MP4_FORMAT,
    ODD,
    PNG,
    ROTATED,
    SILENT,
    TO_MP4,
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
    subtitle,
    video,
)

HFR = info(MP4_FORMAT, 2.0, video(fps=120.0), audio())
MP4_OUTPUT = ("/jobs/j1/output.mp4", "clip_speed.mp4", "mp4")

SPEED_CASES = [
    pytest.param(
        {"speed_factor": 2},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/2,fps=50",  # every frame kept: 25 fps played at 2x is 50 fps
            *X264,
            "-filter:a",
            "atrim=end=10,atempo=2",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        5.0,
        id="2x-video-and-audio",
    ),
    pytest.param(
        {"speed_factor": 3},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/3,fps=60",  # 75 fps capped at 60
            *X264,
            "-filter:a",
            "atrim=end=10,atempo=2,atempo=1.5",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        10 / 3,
        id="3x-chained-atempo-fps-capped",
    ),
    pytest.param(
        {"speed_factor": 10},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/10,fps=60",
            *X264,
            "-filter:a",
            "atrim=end=10,atempo=2,atempo=2,atempo=2,atempo=1.25",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        1.0,
        id="10x-max-atempo-chain",
    ),
    pytest.param(
        {"speed_factor": 0.25},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/0.25,fps=25",  # slowing down keeps the input's rate
            *X264,
            "-filter:a",
            "atrim=end=10,atempo=0.5,atempo=0.5",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        40.0,
        id="0.25x-min-atempo-chain",
    ),
    pytest.param(
        {"speed_factor": 0.4},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/0.4,fps=25",
            *X264,
            "-filter:a",
            "atrim=end=10,atempo=0.5,atempo=0.8",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        25.0,
        id="0.4x-chained-atempo",
    ),
    pytest.param(
        {"speed_factor": 2, "maintain_pitch": False},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/2,fps=50",
            *X264,
            "-filter:a",
            "atrim=end=10,asetrate=96000,aresample=48000",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        5.0,
        id="2x-without-pitch-correction",
    ),
    pytest.param(
        {"speed_factor": 0.3, "maintain_pitch": False},
        ODD,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/0.3,fps=30,scale=320:240",  # 321x241 evened for 4:2:0
            *X264,
            "-filter:a",
            "atrim=end=1,asetrate=13230,aresample=44100",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        1 / 0.3,
        id="0.3x-odd-size-no-pitch",
    ),
    pytest.param(
        {"speed_factor": 1.5},
        ROTATED,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/1.5,fps=44.955",  # 29.97 * 1.5, under the cap
            *X264,
            "-filter:a",
            "atrim=end=4,atempo=1.5",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        4 / 1.5,
        id="1.5x-ntsc-rate-rotated",
    ),
    pytest.param(
        {"speed_factor": 2},
        HFR,
        [
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "setpts=PTS/2,fps=120",  # already above the cap: never below the input rate
            *X264,
            "-filter:a",
            "atrim=end=2,atempo=2",
            *AAC,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        1.0,
        id="2x-high-frame-rate",
    ),
    pytest.param(
        {"speed_factor": 2},
        SILENT,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "setpts=PTS/2,fps=50",
            *X264,
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        MP4_OUTPUT,
        1.0,
        id="video-without-audio",
    ),
    pytest.param(
        {"speed_factor": 1.5},
        WAV,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:a",
            "atrim=end=3,atempo=1.5",
            "-c:a",
            "pcm_s16le",
            "-sn",
            "-dn",
            "-f",
            "wav",
            out("output.wav"),
        ],
        ("/jobs/j1/output.wav", "clip_speed.wav", "wav"),
        2.0,
        id="audio-only-wav-stays-wav",
    ),
    pytest.param(
        {"speed_factor": 0.5, "maintain_pitch": False},
        MP3,
        [
            *reading(),
            "-map",
            "0:1",  # the audio, not the cover art at 0:0
            "-filter:a",
            "atrim=end=3,asetrate=22050,aresample=44100",
            *MP3_Q2,
            "-sn",
            "-dn",
            "-f",
            "mp3",
            out("output.mp3"),
        ],
        ("/jobs/j1/output.mp3", "clip_speed.mp3", "mp3"),
        6.0,
        id="mp3-with-cover-art-stays-mp3",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output", "duration"), SPEED_CASES)
def test_speed(
    raw: dict[str, Any],
    media: MediaInfo,
    args: list[str],
    output: tuple[str, str, str],
    duration: float,
) -> None:
    result = plan("speed", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == pytest.approx(duration)
    assert result.stage == "processing"
    assert result.before == () and result.files == ()
    assert_inputs_guarded(result.args)


@pytest.mark.parametrize(
    ("factor", "chain"),
    [
        pytest.param(1.0, ["atempo=1"], id="1x"),
        pytest.param(2.0, ["atempo=2"], id="2x-fits-one"),
        pytest.param(0.5, ["atempo=0.5"], id="0.5x-fits-one"),
        pytest.param(2.5, ["atempo=2", "atempo=1.25"], id="2.5x"),
        pytest.param(4.0, ["atempo=2", "atempo=2"], id="4x"),
        pytest.param(7.0, ["atempo=2", "atempo=2", "atempo=1.75"], id="7x"),
        pytest.param(10.0, ["atempo=2", "atempo=2", "atempo=2", "atempo=1.25"], id="10x"),
        pytest.param(0.3, ["atempo=0.5", "atempo=0.6"], id="0.3x"),
        pytest.param(0.25, ["atempo=0.5", "atempo=0.5"], id="0.25x"),
    ],
)
def test_atempo_chain(factor: float, chain: list[str]) -> None:
    steps = atempo_chain(factor)
    assert steps == chain
    # Each instance within atempo's 0.5-2 range, and together exactly the factor.
    values = [float(step.removeprefix("atempo=")) for step in steps]
    assert all(0.5 <= v <= 2.0 for v in values)
    assert math.prod(values) == pytest.approx(factor)


TRIM_CASES = [
    pytest.param(
        {"start_time": 1, "end_time": 3},
        MP4,
        [
            "-seek_timestamp",
            "1",
            "-ss",  # input seeking: before the input it applies to
            "1",
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "null",
            *X264,
            *AAC,
            "-t",
            "2",
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_trim.mp4", "mp4"),
        2.0,
        id="video-mid-clip",
    ),
    pytest.param(
        {"start_time": 0, "end_time": 4},
        MP4,
        [
            *reading(),  # no seek at all from the start
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "null",
            *X264,
            *AAC,
            "-t",
            "4",
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_trim.mp4", "mp4"),
        4.0,
        id="from-the-start",
    ),
    pytest.param(
        {"start_time": 1.25, "end_time": 3.5},
        MP4,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "1.25",
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "null",
            *X264,
            *AAC,
            "-t",
            "2.25",
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_trim.mp4", "mp4"),
        2.25,
        id="fractional-times",
    ),
    pytest.param(
        {"start_time": 0.5, "end_time": 1.04},
        ODD,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "0.5",
            *reading(),
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-filter:v",
            "scale=320:240",
            *X264,
            *AAC,
            "-t",
            "0.5",  # the end 0.04 s past the 1 s input is clamped to it
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_trim.mp4", "mp4"),
        0.5,
        id="odd-size-end-clamped",
    ),
    pytest.param(
        {"start_time": 0.5, "end_time": 1.5},
        SILENT,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "0.5",
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "null",
            *X264,
            "-t",
            "1",
            "-sn",
            "-dn",
            "-write_tmcd",
            "0",
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_trim.mp4", "mp4"),
        1.0,
        id="video-without-audio",
    ),
    pytest.param(
        {"start_time": 1, "end_time": 2.5},
        FLAC,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "1",
            *reading(),
            "-map",
            "0:0",
            "-c:a",
            "flac",
            "-t",
            "1.5",
            "-sn",
            "-dn",
            "-f",
            "flac",
            out("output.flac"),
        ],
        ("/jobs/j1/output.flac", "clip_trim.flac", "flac"),
        1.5,
        id="audio-only-flac",
    ),
    pytest.param(
        {"start_time": 2, "end_time": 3},
        MP3,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "2",
            *reading(),
            "-map",
            "0:1",
            *MP3_Q2,
            "-t",
            "1",
            "-sn",
            "-dn",
            "-f",
            "mp3",
            out("output.mp3"),
        ],
        ("/jobs/j1/output.mp3", "clip_trim.mp3", "mp3"),
        1.0,
        id="mp3-with-cover-art",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output", "duration"), TRIM_CASES)
def test_trim(
    raw: dict[str, Any],
    media: MediaInfo,
    args: list[str],
    output: tuple[str, str, str],
    duration: float,
) -> None:
    result = plan("trim", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == pytest.approx(duration)
    assert result.before == () and result.files == ()
    assert_inputs_guarded(result.args)


NO_DURATION = info(MP4_FORMAT, None, video(), audio())


@pytest.mark.parametrize(
    ("operation", "raw", "media", "code", "field"),
    [
        pytest.param(
            "speed", {"speed_factor": 2}, PNG, ErrorCode.UNSUPPORTED_MEDIA, None, id="speed-image"
        ),
        pytest.param(
            "speed",
            {"speed_factor": 2},
            NO_DURATION,
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="speed-no-duration",
        ),
        pytest.param(
            "trim",
            {"start_time": 0, "end_time": 1},
            PNG,
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="trim-image",
        ),
        pytest.param(
            "trim",
            {"start_time": 10, "end_time": 11},
            MP4,
            ErrorCode.OUT_OF_RANGE,
            "$.options.start_time",
            id="trim-start-at-end",
        ),
        pytest.param(
            "trim",
            {"start_time": 12, "end_time": 13},
            MP4,
            ErrorCode.OUT_OF_RANGE,
            "$.options.start_time",
            id="trim-start-past-end",
        ),
        pytest.param(
            "trim",
            {"start_time": 0, "end_time": 10.06},
            MP4,
            ErrorCode.OUT_OF_RANGE,
            "$.options.end_time",
            id="trim-end-past-tolerance",
        ),
    ],
)
def test_refusals(
    operation: str, raw: dict[str, Any], media: MediaInfo, code: str, field: str | None
) -> None:
    error = refusal(operation, raw, media)
    assert error.code == code
    if field is not None:
        assert error.details is not None
        assert error.details["field"] == field
        assert error.details["input_duration"] == media.duration


@pytest.mark.parametrize(
    ("operation", "raw"),
    [
        pytest.param("speed", {"speed_factor": 2}, id="speed"),
        pytest.param("trim", {"start_time": 0, "end_time": 1}, id="trim"),
    ],
)
def test_refuses_input_without_audio_or_video(operation: str, raw: dict[str, Any]) -> None:
    error = refusal(operation, raw, info("matroska,webm", 3.0, subtitle(index=0)))
    assert error.code == ErrorCode.UNSUPPORTED_MEDIA


def test_trim_of_an_unindexed_input_seeks_on_the_output() -> None:
    unindexed = attrs.evolve(info("matroska,webm", 10.0, video(), audio()), seekable=False)
    result = plan("trim", {"start_time": 1, "end_time": 3}, unindexed)
    head = [*reading(), "-ss", "1", "-map", "0:0", "-map", "0:1"]
    assert list(result.args[: len(head)]) == head  # -ss after -i: decoded from the start
    assert result.args.count("-ss") == 1
    assert result.stage == "processing (decoding from the start: the input has no seek index)"
    assert result.expected_duration == pytest.approx(2.0)
    assert "-ss" not in plan("trim", {"start_time": 0, "end_time": 3}, unindexed).args
