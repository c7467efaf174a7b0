"""What each operation promises its outputs will be (issue 13, item 2): every operation
declares one, computed from the probed input and the options."""

from __future__ import annotations

from typing import Any

import pytest

from ffserve.ffmpeg.ops import MULTI, SINGLE
from ffserve.ffmpeg.promise import Promise
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import MKV_SUBS, MP3, MP4, PNG, ROTATED, SILENT, SRT, WAV, plan

# (operation, options, inputs) -> (duration, video, audio, size, at_most)
CASES: list[tuple[str, dict[str, Any], tuple[MediaInfo, ...], tuple[Any, ...]]] = [
    ("speed", {"speed_factor": 2}, (MP4,), (5.0, True, True, None, False)),
    ("speed", {"speed_factor": 0.5}, (WAV,), (6.0, False, True, None, False)),
    ("trim", {"start_time": 2, "end_time": 5.5}, (MP4,), (3.5, True, True, None, False)),
    # An end just past the input's is clamped: the promise is to the input's end.
    ("trim", {"start_time": 8, "end_time": 10.04}, (MP4,), (2.0, True, True, None, False)),
    ("compress", {"preset": "low"}, (MP4,), (10.0, True, True, None, False)),
    ("compress", {}, (MP3,), (3.0, False, True, None, False)),
    ("convert", {"target_format": "mkv"}, (MP4,), (10.0, True, True, None, False)),
    ("convert", {"target_format": "mp3"}, (MP4,), (10.0, False, True, None, True)),
    ("extract_audio", {"format": "mp3"}, (MP4,), (10.0, False, True, None, True)),
    ("remove_audio", {}, (MP4,), (10.0, True, False, None, True)),
    ("thumbnail", {"width": 320}, (MP4,), (None, True, None, (320, 180), False)),
    # A phone video: the thumbnail is as shown, upright.
    ("thumbnail", {}, (ROTATED,), (None, True, None, (1080, 1920), False)),
    (
        "gif",
        {"start_time": 9, "duration": 5, "width": 320},
        (MP4,),
        (1.0, True, None, (320, 180), False),
    ),
    (
        "filter",
        {"filters": [{"type": "scale", "width": 641}]},
        (MP4,),
        (10.0, True, True, (640, 360), False),
    ),
    (
        "filter",
        {"filters": [{"type": "volume", "volume": 2}]},
        (MP4,),
        (10.0, True, True, None, False),
    ),
    (
        "filter",
        {"filters": [{"type": "rotate", "angle": 90}]},
        (PNG,),
        (None, True, None, (601, 801), False),
    ),
    ("concat", {"file_count": 2}, (MP4, SILENT), (12.0, True, True, None, False)),
    # The subtitles may outlast the picture: the input's duration is an upper bound only.
    ("burn_subtitles", {}, (MKV_SUBS,), (6.0, True, True, None, True)),
    ("burn_subtitles", {}, (SILENT, SRT), (2.0, True, False, None, False)),
    ("extract_subtitles", {}, (MKV_SUBS,), (None, None, None, None, False)),
]


@pytest.mark.parametrize(("operation", "options", "inputs", "expected"), CASES)
def test_each_operation_promises_what_it_means(
    operation: str,
    options: dict[str, Any],
    inputs: tuple[MediaInfo, ...],
    expected: tuple[Any, ...],
) -> None:
    promise = plan(operation, options, *inputs).promise
    duration, video, audio, size, at_most = expected
    if duration is None:
        assert promise.duration is None
    else:
        assert promise.duration == pytest.approx(duration)
        assert promise.slack > 0
    assert (promise.video, promise.audio, promise.size, promise.at_most) == (
        video,
        audio,
        size,
        at_most,
    )
    assert promise.why.startswith(operation)


def test_every_operation_is_covered() -> None:
    assert {case[0] for case in CASES} == set(SINGLE) | set(MULTI)


def test_a_thumbnail_set_holds_every_picture_to_one_promise() -> None:
    result = plan("thumbnail", {"count": 4, "width": 160}, MP4)
    assert len(result.outputs) == 4
    assert result.promise == Promise("thumbnail of 160x90", video=True, size=(160, 90))
