"""concat: stream copy through our own list when inputs match, one filter graph otherwise."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ffserve.errors import ErrorCode
from ffserve.ffmpeg.ops import Source
from ffserve.ffmpeg.ops.common import num
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    FLAC,
    MP4,
    MP4_FORMAT,
    ODD,
    PNG,
    ROTATED,
    SILENT,
    WAV,
    WEBM,
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
    video,
)

MKV = info("matroska,webm", 5.0, video("h264", 640, 360), audio("aac"))
AVI = info("avi", 2.0, video("mpeg4", 640, 360), audio("mp3", 44100))
MP4_30FPS = info(MP4_FORMAT, 3.0, video(fps=30.0), audio())
HFR = info(MP4_FORMAT, 1.0, video(fps=120.0), audio())


def parts(*media: MediaInfo) -> list[Source]:
    """The uploads as intake names them: input_00, input_01, ..."""
    return [source(m, f"part{n}.mp4", f"input_{n:02d}") for n, m in enumerate(media)]


def count(n: int) -> dict[str, int]:
    return {"file_count": n}


def listing(media: list[MediaInfo]) -> str:
    """Our concat list: each input with the duration of its content, so that the next
    starts where it ends rather than at the container's stated end."""
    return "ffconcat version 1.0\n" + "".join(
        f"file 'input_{i:02d}'\nduration {num(m.duration or 0.0)}\n" for i, m in enumerate(media)
    )


# The concat demuxer gets its own, narrower whitelist: the list, and the two formats whose
# files cannot also parse as a concat list.
CONCAT_INPUT = [
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    "concat,mov,matroska",
    "-f",
    "concat",
    "-safe",
    "1",
    "-i",
    "file:/jobs/j1/concat.txt",
]

COPY_CASES = [
    pytest.param(
        [MP4, MP4],
        [
            *CONCAT_INPUT,
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c",
            "copy",
            "-f",
            "mp4",
            "-movflags",
            "+faststart",
            out("output.mp4"),
        ],
        ("/jobs/j1/output.mp4", "part0_joined.mp4", "mp4"),
        20.0,
        id="mp4",
    ),
    pytest.param(
        [MKV, MKV],
        [
            *CONCAT_INPUT,
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c",
            "copy",
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        ("/jobs/j1/output.mkv", "part0_joined.mkv", "mkv"),
        10.0,
        id="mkv",
    ),
    pytest.param(
        [WEBM, WEBM, WEBM],
        [
            *CONCAT_INPUT,
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            "-c",
            "copy",
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "part0_joined.webm", "webm"),
        15.0,
        id="webm-codecs-stay-webm",
    ),
    pytest.param(
        [SILENT, SILENT],
        [
            *CONCAT_INPUT,
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "mp4",
            "-movflags",
            "+faststart",
            out("output.mp4"),
        ],
        ("/jobs/j1/output.mp4", "part0_joined.mp4", "mp4"),
        4.0,
        id="video-only",
    ),
]


@pytest.mark.parametrize(("media", "args", "output", "duration"), COPY_CASES)
def test_concat_copy(
    media: list[MediaInfo], args: list[str], output: tuple[str, str, str], duration: float
) -> None:
    result = plan("concat", count(len(media)), *parts(*media))
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == pytest.approx(duration)
    assert result.stage == "processing (stream copy)"
    # Our own list, relative names only, written into the job dir before the run.
    assert result.files == ((Path("/jobs/j1/concat.txt"), listing(media)),)
    assert result.before == ()
    assert_inputs_guarded(result.args)


LAYOUT = "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo"


def video_leg(n: int, stream: int, size: str, fps: str, length: str) -> str:
    w, h = size.split("x")
    return (
        f"[{n}:{stream}]scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p,"
        f"trim=duration={length},setpts=PTS-STARTPTS[v{n}]"
    )


def audio_leg(n: int, stream: int, length: str) -> str:
    return (
        f"[{n}:{stream}]aresample=48000,{LAYOUT},apad,"
        f"atrim=duration={length},asetpts=PTS-STARTPTS[a{n}]"
    )


def silence(n: int, length: str) -> str:
    return f"anullsrc=r=48000:cl=stereo,atrim=duration={length}[a{n}]"


AV_TAIL = ["-map", "[v]", *X264, "-map", "[a]", "-c:a", "aac", "-b:a", "160k"]
TO_MP4 = ["-f", "mp4", "-movflags", "+faststart", out("output.mp4")]
JOINED_MP4 = ("/jobs/j1/output.mp4", "part0_joined.mp4", "mp4")

NORMALISE_CASES = [
    pytest.param(
        [MP4, SILENT],
        ";".join(
            [
                video_leg(0, 0, "1280x720", "25", "10"),
                audio_leg(0, 1, "10"),
                video_leg(1, 0, "1280x720", "25", "2"),
                silence(1, "2"),  # no audio: silence for as long as its video
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        12.0,
        id="second-without-audio",
    ),
    pytest.param(
        [SILENT, MP4],
        ";".join(
            [
                video_leg(0, 0, "320x240", "25", "2"),
                silence(0, "2"),
                video_leg(1, 0, "320x240", "25", "10"),
                audio_leg(1, 1, "10"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        12.0,
        id="first-without-audio",
    ),
    pytest.param(
        [ODD, MP4],
        ";".join(
            [
                video_leg(0, 0, "320x240", "30", "1"),  # the first's odd 321x241, evened
                audio_leg(0, 1, "1"),
                video_leg(1, 0, "320x240", "30", "10"),
                audio_leg(1, 1, "10"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        11.0,
        id="odd-first-size-evened",
    ),
    pytest.param(
        [MP4, MP4_30FPS],
        ";".join(
            [
                video_leg(0, 0, "1280x720", "25", "10"),
                audio_leg(0, 1, "10"),
                video_leg(1, 0, "1280x720", "25", "3"),
                audio_leg(1, 1, "3"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        13.0,
        id="frame-rates-differ",
    ),
    pytest.param(
        [ROTATED, MP4],
        ";".join(
            [
                video_leg(0, 0, "1080x1920", "29.97", "4"),  # the displayed, portrait size
                audio_leg(0, 1, "4"),
                video_leg(1, 0, "1080x1920", "29.97", "10"),
                audio_leg(1, 1, "10"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        14.0,
        id="rotated-first",
    ),
    pytest.param(
        [HFR, MP4],
        ";".join(
            [
                video_leg(0, 0, "1280x720", "60", "1"),  # 120 fps capped
                audio_leg(0, 1, "1"),
                video_leg(1, 0, "1280x720", "60", "10"),
                audio_leg(1, 1, "10"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        11.0,
        id="frame-rate-capped",
    ),
    pytest.param(
        [AVI, AVI],
        ";".join(
            [
                video_leg(0, 0, "640x360", "25", "2"),
                audio_leg(0, 1, "2"),
                video_leg(1, 0, "640x360", "25", "2"),
                audio_leg(1, 1, "2"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        4.0,
        id="identical-avi-not-copyable",
    ),
    pytest.param(
        [MP4, MKV],
        ";".join(
            [
                video_leg(0, 0, "1280x720", "25", "10"),
                audio_leg(0, 1, "10"),
                video_leg(1, 0, "1280x720", "25", "5"),
                audio_leg(1, 1, "5"),
                "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            ]
        ),
        [*AV_TAIL, *TO_MP4],
        JOINED_MP4,
        15.0,
        id="mixed-containers",
    ),
    pytest.param(
        [WAV, FLAC, WAV],
        ";".join(
            [
                audio_leg(0, 0, "3"),
                audio_leg(1, 0, "3"),
                audio_leg(2, 0, "3"),
                "[a0][a1][a2]concat=n=3:v=0:a=1[a]",
            ]
        ),
        [
            "-map",
            "[a]",
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-f",
            "ipod",
            "-movflags",
            "+faststart",
            out("output.m4a"),
        ],
        ("/jobs/j1/output.m4a", "part0_joined.m4a", "m4a"),
        9.0,
        id="audio-only-to-m4a",
    ),
]


@pytest.mark.parametrize(("media", "graph", "tail", "output", "duration"), NORMALISE_CASES)
def test_concat_normalised(
    media: list[MediaInfo],
    graph: str,
    tail: list[str],
    output: tuple[str, str, str],
    duration: float,
) -> None:
    result = plan("concat", count(len(media)), *parts(*media))
    inputs = [arg for n in range(len(media)) for arg in reading(f"input_{n:02d}")]
    assert list(result.args) == [*inputs, "-filter_complex", graph, *tail]
    assert outputs(result) == [output]
    assert result.expected_duration == pytest.approx(duration)
    assert result.stage == "processing (normalising inputs)"
    assert result.files == () and result.before == ()
    assert_inputs_guarded(result.args)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(info(MP4_FORMAT, 10.0, video(fps=30.0), audio()), id="frame-rate"),
        pytest.param(info(MP4_FORMAT, 10.0, video(width=1920), audio()), id="width"),
        pytest.param(info(MP4_FORMAT, 10.0, video(profile="High"), audio()), id="profile"),
        pytest.param(info(MP4_FORMAT, 10.0, video(rotation=90), audio()), id="rotation"),
        pytest.param(info(MP4_FORMAT, 10.0, video("hevc"), audio()), id="video-codec"),
        pytest.param(info(MP4_FORMAT, 10.0, video(), audio(rate=44100)), id="sample-rate"),
        pytest.param(info(MP4_FORMAT, 10.0, video(), audio(channels=1)), id="channels"),
        pytest.param(info(MP4_FORMAT, 10.0, video(), audio("mp3")), id="audio-codec"),
        pytest.param(info(MP4_FORMAT, 10.0, video()), id="audio-missing"),
        pytest.param(info("matroska,webm", 10.0, video(), audio()), id="container"),
    ],
)
def test_any_stream_difference_means_normalising(other: MediaInfo) -> None:
    result = plan("concat", count(2), *parts(MP4, other))
    assert result.stage == "processing (normalising inputs)"
    assert result.files == ()
    assert result.args[-1] == "file:/jobs/j1/output.mp4"
    assert "-filter_complex" in result.args and "concat" not in result.args


@pytest.mark.parametrize(
    ("media", "code", "details"),
    [
        pytest.param([MP4, WAV], ErrorCode.NO_VIDEO_STREAM, {"input": 1}, id="second-no-video"),
        pytest.param([MP4, PNG], ErrorCode.UNSUPPORTED_MEDIA, {"input": 1}, id="image"),
        pytest.param(
            [info(MP4_FORMAT, None, video(), audio()), MP4],
            ErrorCode.UNSUPPORTED_MEDIA,
            {"input": 0},
            id="no-duration",
        ),
    ],
)
def test_refusals(media: list[MediaInfo], code: str, details: dict[str, int]) -> None:
    error = refusal("concat", count(len(media)), *parts(*media))
    assert error.code == code
    assert error.details == details


def test_refuses_a_count_that_does_not_match_the_inputs() -> None:
    error = refusal("concat", count(3), *parts(MP4, MP4))
    assert error.code == ErrorCode.JOB_FAILED


def test_inputs_with_streams_in_another_order_are_not_stream_copied() -> None:
    swapped = info(MP4_FORMAT, 10.0, audio(index=0), video(index=1))  # same streams as MP4
    result = plan("concat", count(2), *parts(MP4, swapped))
    assert result.stage == "processing (normalising inputs)"


def test_concat_of_inputs_whose_edit_list_hides_media_is_normalised() -> None:
    """The concat demuxer passes every stored packet on, even into MP4: the part an input's
    edit list hides would play at the joint. Re-encoding honours the edit list."""
    hidden = attrs.evolve(MP4, streams=tuple(attrs.evolve(s, hidden_s=0.5) for s in MP4.streams))
    assert plan("concat", count(2), *parts(MP4, MP4)).stage == "processing (stream copy)"
    result = plan("concat", count(2), *parts(MP4, hidden))
    assert result.stage == "processing (normalising inputs)"
    assert "copy" not in result.args
