"""The comparison of an output's probe with its operation's promise (sans-I/O)."""

from __future__ import annotations

import pytest

from ffserve.ffmpeg.promise import (
    Promise,
    broken_promise,
    one_kind,
    same_streams,
    seconds,
    slack_of,
)
from ffserve.media.streams import MediaInfo, Stream

VIDEO = Stream(0, "video", "h264", width=320, height=240, fps=25.0)
AUDIO = Stream(1, "audio", "aac", sample_rate=48000, channels=2)
COVER = Stream(2, "video", "mjpeg", width=160, height=120, is_cover_art=True)
SUBTITLE = Stream(3, "subtitle", "subrip")


def media(duration: float | None, *streams: Stream, name: str = "mov,mp4") -> MediaInfo:
    return MediaInfo(name, duration, 1000, None, streams)


SPEED = Promise("speed 2 of 12.0 s", 6.0, 0.1, video=True, audio=True)


@pytest.mark.parametrize("duration", [6.0, 5.95, 6.1])
def test_a_duration_within_the_slack_keeps_the_promise(duration: float) -> None:
    assert broken_promise(SPEED, media(duration, VIDEO, AUDIO)) is None


def test_a_wrong_duration_is_named_with_where_the_expectation_comes_from() -> None:
    assert broken_promise(SPEED, media(12.0, VIDEO, AUDIO)) == (
        "output duration 12.0 s, expected 6.0 s (speed 2 of 12.0 s)"
    )
    assert broken_promise(SPEED, media(3.0, VIDEO, AUDIO)) == (
        "output duration 3.0 s, expected 6.0 s (speed 2 of 12.0 s)"
    )


def test_no_duration_at_all_breaks_a_duration_promise() -> None:
    assert broken_promise(SPEED, media(None, VIDEO, AUDIO)) == (
        "output has no duration, expected 6.0 s (speed 2 of 12.0 s)"
    )


def test_long_outputs_get_a_relative_slack() -> None:
    # 2% of 300 s: container rounding and encoder delay, not a wrong result.
    promise = Promise("compress of 300.0 s", 300.0, 0.1)
    assert broken_promise(promise, media(305.0, VIDEO)) is None
    assert broken_promise(promise, media(307.0, VIDEO)) is not None


def test_an_upper_bound_allows_shorter_but_not_longer() -> None:
    promise = Promise("burn_subtitles into 60.0 s", 60.0, 0.1, at_most=True)
    assert broken_promise(promise, media(5.5, VIDEO)) is None
    assert broken_promise(promise, media(65.0, VIDEO)) == (
        "output duration 65.0 s, expected at most 60.0 s (burn_subtitles into 60.0 s)"
    )


@pytest.mark.parametrize(
    ("promise", "streams", "message"),
    [
        (
            Promise("remove_audio", video=True, audio=False),
            (VIDEO, AUDIO),
            "output has an audio stream, expected none (remove_audio)",
        ),
        (
            Promise("extract_audio to mp3", video=False, audio=True),
            (VIDEO, AUDIO),
            "output has a video stream, expected none (extract_audio to mp3)",
        ),
        (
            Promise("trim 0.3-1 s of 2.0 s", 0.7, video=True, audio=True),
            (),
            "output has no video stream, expected one (trim 0.3-1 s of 2.0 s)",
        ),
        (
            Promise("convert to mp4 of 2.0 s", video=True, audio=True),
            (VIDEO,),
            "output has no audio stream, expected one (convert to mp4 of 2.0 s)",
        ),
    ],
)
def test_missing_or_unwanted_streams_break_the_promise(
    promise: Promise, streams: tuple[Stream, ...], message: str
) -> None:
    assert broken_promise(promise, media(0.7, *streams)) == message


def test_cover_art_is_not_video() -> None:
    # An M4A with a cover picture from extract_audio: audio only, as promised.
    promise = Promise("extract_audio to m4a", video=False, audio=True)
    assert broken_promise(promise, media(2.0, AUDIO, COVER)) is None
    keeps_video = Promise("convert", video=True)
    assert broken_promise(keeps_video, media(2.0, AUDIO, COVER)) is not None


def test_picture_size_is_the_displayed_one() -> None:
    promise = Promise("thumbnail of 240x320", video=True, size=(240, 320))
    rotated = Stream(0, "video", "h264", width=320, height=240, rotation=90)
    assert broken_promise(promise, media(None, rotated)) is None
    assert broken_promise(promise, media(None, VIDEO)) == (
        "output picture is 320x240, expected 240x320 (thumbnail of 240x320)"
    )


def test_an_empty_promise_holds_for_anything() -> None:
    assert broken_promise(Promise("extract_subtitles"), media(None, SUBTITLE)) is None


def test_slack_is_two_video_frames_and_three_audio_frames_per_input() -> None:
    one = media(2.0, VIDEO, AUDIO)
    assert slack_of(one) == pytest.approx(2 / 25 + 3 * 1152 / 48000)
    assert slack_of(one, one) == pytest.approx(2 * slack_of(one))
    still = media(None, Stream(0, "video", "png", width=2, height=2), name="png_pipe")
    assert slack_of(still) == 0.0


def test_same_streams_keeps_the_inputs_kinds_and_bounds_durations_from_subtitles() -> None:
    promise = same_streams(media(2.0, VIDEO, AUDIO), "compress of 2.0 s", 2.0)
    assert (promise.video, promise.audio, promise.at_most) == (True, True, False)
    audio_only = same_streams(media(2.0, AUDIO, COVER), "speed", 1.0)
    assert (audio_only.video, audio_only.audio) == (False, True)
    with_subtitles = same_streams(media(60.0, VIDEO, SUBTITLE), "burn", 60.0)
    assert with_subtitles.at_most


@pytest.mark.parametrize(
    ("value", "text"), [(12.0, "12.0 s"), (0.04, "0.04 s"), (6.0213, "6.021 s"), (0.0, "0.0 s")]
)
def test_seconds_read_as_a_person_writes_them(value: float, text: str) -> None:
    assert seconds(value) == text


def test_one_kind_may_be_shorter_than_the_input_but_never_longer() -> None:
    # extract_audio of a 6 s video whose audio lasts 5 s is right; 12 s of audio is not.
    promise = one_kind(media(6.0, VIDEO, AUDIO), "extract_audio to mp3 of 6.0 s", 6.0, video=False)
    assert (promise.video, promise.audio) == (False, True)
    assert broken_promise(promise, media(5.0, AUDIO)) is None
    assert broken_promise(promise, media(12.0, AUDIO)) == (
        "output duration 12.0 s, expected at most 6.0 s (extract_audio to mp3 of 6.0 s)"
    )
