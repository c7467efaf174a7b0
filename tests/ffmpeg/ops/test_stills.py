"""thumbnail and gif: the exact FFmpeg arguments they plan, and what they refuse."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ffserve.errors import ErrorCode
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    MP3,
    MP4,
    MP4_FORMAT,
    ODD,
    PNG,
    ROTATED,
    WAV,
    assert_inputs_guarded,
    audio,
    info,
    out,
    outputs,
    plan,
    reading,
    refusal,
    video,
)

FAST = info(MP4_FORMAT, 10.0, video(fps=50.0), audio())
# Audio first, so the video is stream 1.
AUDIO_FIRST = info("matroska,webm", 3.0, audio(index=0), video(width=640, height=480, index=1))
NO_RATE = info(MP4_FORMAT, 10.0, video(fps=None), audio())

JPEG_OUT = ["-c:v", "mjpeg", "-q:v", "2", "-update", "1", "-f", "image2"]
PNG_OUT = ["-c:v", "png", "-update", "1", "-f", "image2"]


def jpeg(n: int, graph: str, name: str) -> list[str]:
    """The output options of one JPEG thumbnail, from input `n`."""
    return ["-map", f"{n}:0", "-frames:v", "1", "-filter:v", graph, *JPEG_OUT, out(name)]


THUMBNAIL_CASES = [
    pytest.param(
        {},
        MP4,
        ["-seek_timestamp", "1", "-ss", "5", *reading(), *jpeg(0, "format=yuvj420p", "output.jpg")],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="middle-by-default",
    ),
    pytest.param(
        {"timestamp": 0},
        MP4,
        [*reading(), *jpeg(0, "format=yuvj420p", "output.jpg")],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="first-frame-no-seek",
    ),
    pytest.param(
        {"timestamp": 3.5, "format": "jpg"},
        MP4,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "3.5",
            *reading(),
            *jpeg(0, "format=yuvj420p", "output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="timestamp-jpg-alias",
    ),
    pytest.param(
        {"timestamp": 10, "format": "png", "width": 320},
        MP4,
        # At the very end: seek to the start of the last frame (25 fps), not past it.
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "9.96",
            *reading(),
            "-map",
            "0:0",
            "-frames:v",
            "1",
            "-filter:v",
            "scale=320:180,format=rgb24",
            *PNG_OUT,
            out("output.png"),
        ],
        [("/jobs/j1/output.png", "clip_thumb.png", "png")],
        id="png-at-the-end-scaled",
    ),
    pytest.param(
        {"timestamp": 10},
        FAST,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "9.98",
            *reading(),
            *jpeg(0, "format=yuvj420p", "output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="last-frame-at-50fps",
    ),
    pytest.param(
        {"timestamp": 10},
        NO_RATE,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "9.96",
            *reading(),
            *jpeg(0, "format=yuvj420p", "output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="last-frame-unknown-rate-assumes-25",
    ),
    pytest.param(
        {"count": 3, "format": "jpg", "height": 100},
        MP4,
        # One seeking input per picture, at the middle of each third.
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "1.666667",
            *reading(),
            "-seek_timestamp",
            "1",
            "-ss",
            "5",
            *reading(),
            "-seek_timestamp",
            "1",
            "-ss",
            "8.333333",
            *reading(),
            *jpeg(0, "scale=178:100,format=yuvj420p", "output_01.jpg"),
            *jpeg(1, "scale=178:100,format=yuvj420p", "output_02.jpg"),
            *jpeg(2, "scale=178:100,format=yuvj420p", "output_03.jpg"),
        ],
        [
            ("/jobs/j1/output_01.jpg", "clip_thumb_01.jpg", "jpg"),
            ("/jobs/j1/output_02.jpg", "clip_thumb_02.jpg", "jpg"),
            ("/jobs/j1/output_03.jpg", "clip_thumb_03.jpg", "jpg"),
        ],
        id="count-3",
    ),
    pytest.param(
        {"count": 2, "format": "png"},
        ODD,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "0.25",
            *reading(),
            "-seek_timestamp",
            "1",
            "-ss",
            "0.75",
            *reading(),
            "-map",
            "0:0",
            "-frames:v",
            "1",
            "-filter:v",
            "format=rgb24",
            *PNG_OUT,
            out("output_01.png"),
            "-map",
            "1:0",
            "-frames:v",
            "1",
            "-filter:v",
            "format=rgb24",
            *PNG_OUT,
            out("output_02.png"),
        ],
        [
            ("/jobs/j1/output_01.png", "clip_thumb_01.png", "png"),
            ("/jobs/j1/output_02.png", "clip_thumb_02.png", "png"),
        ],
        id="count-2-png",
    ),
    pytest.param(
        {"count": 2},
        PNG,
        # A still image has one frame and no timeline: nothing to seek to.
        [
            *reading(),
            *reading(),
            *jpeg(0, "format=yuvj420p", "output_01.jpg"),
            *jpeg(1, "format=yuvj420p", "output_02.jpg"),
        ],
        [
            ("/jobs/j1/output_01.jpg", "clip_thumb_01.jpg", "jpg"),
            ("/jobs/j1/output_02.jpg", "clip_thumb_02.jpg", "jpg"),
        ],
        id="image-count-2",
    ),
    pytest.param(
        {"timestamp": 3, "width": 400},
        PNG,
        [*reading(), *jpeg(0, "scale=400:300,format=yuvj420p", "output.jpg")],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="image-timestamp-ignored",
    ),
    pytest.param(
        {"width": 100, "height": 100},
        ROTATED,
        # Fitted into 100x100 by its displayed (portrait) size, evened.
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "2",
            *reading(),
            *jpeg(0, "scale=56:100,format=yuvj420p", "output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="rotated-fit-box",
    ),
    pytest.param(
        {"width": 2560},
        MP4,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "5",
            *reading(),
            *jpeg(0, "scale=2560:1440,format=yuvj420p", "output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="enlarge-allowed",
    ),
    pytest.param(
        {},
        AUDIO_FIRST,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "1.5",
            *reading(),
            "-map",
            "0:1",
            "-frames:v",
            "1",
            "-filter:v",
            "format=yuvj420p",
            *JPEG_OUT,
            out("output.jpg"),
        ],
        [("/jobs/j1/output.jpg", "clip_thumb.jpg", "jpg")],
        id="video-not-first-stream",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "expected"), THUMBNAIL_CASES)
def test_thumbnail(
    raw: dict[str, Any], media: MediaInfo, args: list[str], expected: list[tuple[str, str, str]]
) -> None:
    result = plan("thumbnail", raw, media)
    assert list(result.args) == args
    assert outputs(result) == expected
    assert result.expected_duration is None  # a picture: no progress to report
    assert result.before == () and result.files == ()
    assert_inputs_guarded(result.args)


PALETTE = (
    "split[a][b];[a]palettegen=stats_mode=diff[p];"
    "[b][p]paletteuse=dither=bayer:bayer_scale=5:diff_mode=rectangle[out]"
)
GIF_TAIL = ["-loop", "0", "-f", "gif", out("output.gif")]

GIF_CASES = [
    pytest.param(
        {},
        MP4,
        [
            "-t",
            "5",
            *reading(),
            "-filter_complex",
            f"[0:0]fps=10,scale=480:270:flags=lanczos,{PALETTE}",
            "-map",
            "[out]",
            *GIF_TAIL,
        ],
        5.0,
        id="defaults-optimized",
    ),
    pytest.param(
        {"start_time": 8, "duration": 5, "fps": 15, "width": 320, "optimize": False},
        MP4,
        # Only 2 s are left after 8 s: the clip is cut to them.
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "8",
            "-t",
            "2",
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "fps=15,scale=320:180:flags=lanczos",
            *GIF_TAIL,
        ],
        2.0,
        id="not-optimized-clamped-to-end",
    ),
    pytest.param(
        {"start_time": 1.5, "duration": 0.5, "fps": 30, "width": 200},
        MP4,
        [
            "-seek_timestamp",
            "1",
            "-ss",
            "1.5",
            "-t",
            "0.5",
            *reading(),
            "-filter_complex",
            f"[0:0]fps=30,scale=200:112:flags=lanczos,{PALETTE}",
            "-map",
            "[out]",
            *GIF_TAIL,
        ],
        0.5,
        id="short-clip-height-112.5-rounds-to-even",
    ),
    pytest.param(
        {"duration": 1, "fps": 10, "width": 120, "optimize": False},
        info(MP4_FORMAT, 0.04, video(width=320, height=240)),
        # One frame of 0.04 s, shorter than a GIF frame: the fps filter would round the
        # clip's end to no frame at all; passing the last frame through at the end keeps it.
        [
            "-t",
            "0.04",
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "fps=10:eof_action=pass,scale=120:90:flags=lanczos",
            *GIF_TAIL,
        ],
        0.04,
        id="one-frame-shorter-than-a-gif-frame",
    ),
    pytest.param(
        {"width": None},
        ODD,
        # GIF has no 4:2:0 constraint: the input's own odd size is kept.
        [
            "-t",
            "1",
            *reading(),
            "-filter_complex",
            f"[0:0]fps=10,scale=321:241:flags=lanczos,{PALETTE}",
            "-map",
            "[out]",
            *GIF_TAIL,
        ],
        1.0,
        id="native-width-odd-size",
    ),
    pytest.param(
        {},
        ROTATED,
        [
            "-t",
            "4",
            *reading(),
            "-filter_complex",
            f"[0:0]fps=10,scale=480:853:flags=lanczos,{PALETTE}",
            "-map",
            "[out]",
            *GIF_TAIL,
        ],
        4.0,
        id="rotated-portrait",
    ),
    pytest.param(
        {"optimize": False},
        AUDIO_FIRST,
        [
            "-t",
            "3",
            *reading(),
            "-map",
            "0:1",
            "-filter:v",
            "fps=10,scale=480:360:flags=lanczos",
            *GIF_TAIL,
        ],
        3.0,
        id="video-not-first-stream",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "duration"), GIF_CASES)
def test_gif(raw: dict[str, Any], media: MediaInfo, args: list[str], duration: float) -> None:
    result = plan("gif", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [("/jobs/j1/output.gif", "clip_anim.gif", "gif")]
    assert result.expected_duration == pytest.approx(duration)
    assert_inputs_guarded(result.args)


@pytest.mark.parametrize(
    ("operation", "raw", "media", "code", "field"),
    [
        pytest.param(
            "thumbnail",
            {"timestamp": 10.5},
            MP4,
            ErrorCode.OUT_OF_RANGE,
            "$.options.timestamp",
            id="thumbnail-past-end",
        ),
        pytest.param("thumbnail", {}, WAV, ErrorCode.NO_VIDEO_STREAM, None, id="thumbnail-audio"),
        pytest.param(
            "thumbnail", {}, MP3, ErrorCode.NO_VIDEO_STREAM, None, id="thumbnail-cover-art-only"
        ),
        pytest.param(
            "gif",
            {"start_time": 10},
            MP4,
            ErrorCode.OUT_OF_RANGE,
            "$.options.start_time",
            id="gif-start-at-end",
        ),
        pytest.param("gif", {}, PNG, ErrorCode.UNSUPPORTED_MEDIA, None, id="gif-image"),
        pytest.param("gif", {}, WAV, ErrorCode.NO_VIDEO_STREAM, None, id="gif-audio"),
    ],
)
def test_refusals(
    operation: str, raw: dict[str, Any], media: MediaInfo, code: str, field: str | None
) -> None:
    error = refusal(operation, raw, media)
    assert error.code == code
    if field is not None:
        assert error.details == {"field": field, "input_duration": media.duration}


# A Matroska file without Cues: FFmpeg cannot be trusted to seek it.
UNINDEXED = attrs.evolve(info("matroska,webm", 10.0, video(), audio()), seekable=False)
NO_INDEX = "processing (decoding from the start: the input has no seek index)"


def test_thumbnails_of_an_unindexed_input_decode_it_once_from_the_start() -> None:
    """One input, no input seek; each output drops the frames before its own time."""
    result = plan("thumbnail", {"count": 2}, UNINDEXED)
    assert list(result.args) == [
        *reading(),
        "-ss",
        "2.5",
        *jpeg(0, "format=yuvj420p", "output_01.jpg"),
        "-ss",
        "7.5",
        *jpeg(0, "format=yuvj420p", "output_02.jpg"),
    ]
    assert result.stage == NO_INDEX
    assert_inputs_guarded(result.args)


def test_a_first_frame_thumbnail_needs_no_seek_and_says_nothing_of_one() -> None:
    result = plan("thumbnail", {"timestamp": 0}, UNINDEXED)
    assert list(result.args) == [*reading(), *jpeg(0, "format=yuvj420p", "output.jpg")]
    assert result.stage == "processing"


def test_a_gif_of_an_unindexed_input_seeks_on_the_output() -> None:
    options = {"start_time": 4, "duration": 2, "optimize": False}
    result = plan("gif", options, UNINDEXED)
    assert list(result.args) == [
        *reading(),
        "-ss",
        "4",
        "-t",
        "2",
        "-map",
        "0:0",
        "-filter:v",
        "fps=10,scale=480:270:flags=lanczos",
        "-loop",
        "0",
        "-f",
        "gif",
        out("output.gif"),
    ]
    assert result.stage == NO_INDEX
    assert plan("gif", {**options, "start_time": 0}, UNINDEXED).stage == "processing"


@pytest.mark.parametrize(
    ("operation", "raw"), [("gif", {}), ("trim", {"start_time": 0, "end_time": 1})]
)
def test_a_video_without_any_duration_is_refused_for_what_it_lacks(
    operation: str, raw: dict[str, Any]
) -> None:
    """Not called a still image: a video whose duration could not even be measured."""
    timeless = info("matroska,webm", None, video(), audio())
    error = refusal(operation, raw, timeless)
    assert error.code == ErrorCode.UNSUPPORTED_MEDIA
    assert "states none" in str(error) and "still image" not in str(error)
