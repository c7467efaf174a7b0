"""The work budget: what the options ask for, refused before FFmpeg starts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ffserve.config import LimitsConfig
from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.budget import check_budget
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import MP4, MP4_FORMAT, audio, info, plan, source, video

UHD8K = info(MP4_FORMAT, 10.0, video(width=7680, height=4320), audio())
LIMITS = LimitsConfig()


def verdict(operation: str, raw: dict[str, Any], media: MediaInfo) -> str | None:
    """None when the plan fits the default limits, else the limit it passes."""
    try:
        check_budget(plan(operation, raw, media), [source(media)], LIMITS)
    except JobError as exc:
        assert exc.code == ErrorCode.TOO_LARGE and exc.details is not None
        limit: str = exc.details["limit"]
        return limit
    return None


@pytest.mark.parametrize(
    ("operation", "raw", "media", "expected"),
    [
        ("filter", {"filters": [{"type": "scale", "width": 1920, "height": 1080}]}, MP4, None),
        (
            "filter",
            {"filters": [{"type": "scale", "width": 8192, "height": 8192}]},
            MP4,
            "frame_size",
        ),
        # A 45 degree turn of an 8K frame needs a bounding box past the 8K limit.
        ("filter", {"filters": [{"type": "rotate", "angle": 45}]}, UHD8K, "frame_size"),
        ("filter", {"filters": [{"type": "rotate", "angle": 90}]}, MP4, None),
        ("thumbnail", {"count": 20}, MP4, None),  # 20 x 1280x720: 18 Mpx in flight
        ("thumbnail", {"count": 4}, UHD8K, None),  # exactly four 8K frames
        ("thumbnail", {"count": 5}, UHD8K, "pixels_in_flight"),
        ("thumbnail", {"count": 20, "width": 320}, UHD8K, "pixels_in_flight"),  # decoded at 8K
        ("thumbnail", {"timestamp": 1, "width": 7680}, MP4, None),
        ("gif", {"width": 1920}, MP4, None),  # the schema caps a GIF at 1920 wide
        ("gif", {"width": 640}, UHD8K, None),
        ("speed", {"speed_factor": 2}, UHD8K, None),  # no size chosen by the options
    ],
    ids=lambda v: str(v)[:40],
)
def test_budget(
    operation: str, raw: dict[str, Any], media: MediaInfo, expected: str | None
) -> None:
    assert verdict(operation, raw, media) == expected


def test_the_limits_are_configurable() -> None:
    small = LimitsConfig(max_width=640, max_height=360, max_pixels_in_flight=640 * 360 * 2)
    scaled = plan("filter", {"filters": [{"type": "scale", "width": 1280, "height": 720}]}, MP4)
    with pytest.raises(JobError, match="1280x720 frames; the limit is 640x360"):
        check_budget(scaled, [source(MP4)], small)


def test_steps_before_the_main_run_are_held_to_the_budget() -> None:
    """A step run before the main one (burn_subtitles' subtitle conversion) holds its own
    decoders: the largest step counts, not only the last."""
    fits = plan("thumbnail", {"count": 4}, UHD8K)
    check_budget(fits, [source(UHD8K)], LIMITS)
    five_inputs = tuple(arg for _ in range(5) for arg in ("-i", "file:input"))
    with pytest.raises(JobError, match="5 frames"):
        check_budget(attrs.evolve(fits, before=(five_inputs,)), [source(UHD8K)], LIMITS)
