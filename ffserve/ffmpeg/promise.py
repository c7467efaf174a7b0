"""What an operation promises its outputs hold, and the one place that holds it to that.

FFmpeg exiting 0 with a playable file does not prove the job did what was asked: an input
it cannot seek gives a trim with no streams, a stream it carries unretimed gives a sped-up
file as long as the input. Each operation says, from the probed input and the options,
what every output it makes must be (`Promise`); `broken_promise` compares that with the
output's probe. Sans-I/O.
"""

from __future__ import annotations

import attrs

from ffserve.media.streams import MediaInfo

# A lossy audio frame: AAC holds 1024 samples, MP3 1152; the last one is padded whole.
AUDIO_FRAME_SAMPLES = 1152
# Durations are read from containers that round (GIF delays in 1/100 s, MPEG-TS in
# 1/90000 s), and some add an encoder's delay: the last 2% of a duration is not a promise.
RELATIVE_SLACK = 0.02
# Streams no audio/video output carries whose timeline can outlast the audio and video.
UNTIMED_KINDS = frozenset({"subtitle", "data"})


@attrs.frozen
class Promise:
    """What each output of a job must be. None means the operation promises nothing there.

    `why` says where the duration comes from, in the words of the error a client reads
    ("speed 2 of 12.0 s"); `slack` is how far a correct output's duration may honestly
    differ from it (frame and audio-frame granularity, see `slack_of`).
    """

    why: str
    duration: float | None = None
    slack: float = 0.0
    video: bool | None = None  # True: a video stream; False: none
    audio: bool | None = None
    size: tuple[int, int] | None = None  # the video's displayed width and height
    # The duration is only an upper bound: the input's duration may be its subtitles' or
    # data's, which last past its audio and video and are not in the output.
    at_most: bool = False


def slack_of(*inputs: MediaInfo) -> float:
    """How far a correct output's duration may differ from the ideal, given its inputs:
    two video frames (the cut falls between frames; the last one lasts a frame), three
    audio frames (the last frame is padded whole, and encoder priming not cut by an edit
    list), summed over inputs joined end to end."""
    slack = 0.0
    for info in inputs:
        video = info.video
        if video is not None and not info.is_image:
            slack += 2 / (video.fps or 25.0)
        audio = info.audio
        if audio is not None:
            slack += 3 * AUDIO_FRAME_SAMPLES / (audio.sample_rate or 8000)
    return slack


def seconds(value: float) -> str:
    """A duration for a message: "12.0 s", "0.04 s"."""
    text = f"{value:.3f}".rstrip("0")
    return f"{text}0 s" if text.endswith(".") else f"{text} s"


def broken_promise(promise: Promise, output: MediaInfo) -> str | None:
    """What about `output` breaks `promise`, in a sentence for the client; None if nothing."""
    for kind, wanted, stream in (
        ("video", promise.video, output.video),
        ("audio", promise.audio, output.audio),
    ):
        if wanted is True and stream is None:
            return f"output has no {kind} stream, expected one ({promise.why})"
        if wanted is False and stream is not None:
            article = "an" if kind == "audio" else "a"
            return f"output has {article} {kind} stream, expected none ({promise.why})"
    if promise.size is not None:
        video = output.video
        size = video.display_size if video else None
        if size != promise.size:
            shown = f"{size[0]}x{size[1]}" if size else "of unknown size"
            w, h = promise.size
            return f"output picture is {shown}, expected {w}x{h} ({promise.why})"
    if promise.duration is not None:
        actual, expected = output.duration, promise.duration
        slack = max(promise.slack, RELATIVE_SLACK * expected)
        if actual is None:
            return f"output has no duration, expected {seconds(expected)} ({promise.why})"
        if actual - expected > slack or (not promise.at_most and expected - actual > slack):
            bound = "at most " if promise.at_most else ""
            return (
                f"output duration {seconds(actual)}, expected {bound}{seconds(expected)} "
                f"({promise.why})"
            )
    return None


def same_streams(info: MediaInfo, why: str, duration: float | None) -> Promise:
    """An output with the input's kinds of stream (video if it has video, audio if it has
    audio) lasting `duration`, or at most that when the input's duration may be that of
    streams the output does not carry."""
    return Promise(
        why,
        duration,
        slack_of(info),
        video=info.video is not None and not info.is_image,
        audio=info.audio is not None,
        at_most=any(s.kind in UNTIMED_KINDS for s in info.streams),
    )


def one_kind(info: MediaInfo, why: str, duration: float | None, *, video: bool) -> Promise:
    """An output of the input's video alone or its audio alone: no longer than the input,
    and perhaps shorter, since the input's duration may be the other kind's."""
    return Promise(why, duration, slack_of(info), video=video, audio=not video, at_most=True)
