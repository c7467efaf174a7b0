"""The filter operation: chains of every filter type, as exact FFmpeg arguments."""

from __future__ import annotations

from typing import Any

import pytest

from ffserve.errors import ErrorCode
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    AAC,
    MP3,
    MP3_Q2,
    MP4,
    ODD,
    PNG,
    ROTATED,
    SILENT,
    TO_MP4,
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
    video,
)

MKV_MP3 = info("matroska,webm", 3.0, video("h264"), audio("mp3"))
WMV = info("asf", 3.0, video("wmv3", 321, 241), audio("wmav2", 44100))
FILTERED_MP4 = ("/jobs/j1/output.mp4", "clip_filtered.mp4", "mp4")
TAIL = ["-sn", "-dn", *TO_MP4]


def chain(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"filters": list(filters)}


def video_chain(graph: str) -> list[str]:
    """MP4 input (video 0:0, AAC 0:1) with a video chain: video encoded, AAC copied."""
    return [*reading(), "-map", "0:0", "-filter:v", graph, *X264, "-map", "0:1", "-c:a", "copy"]


FILTER_CASES = [
    # Scale: both sides, one side (aspect kept), odd requests evened.
    pytest.param(
        chain({"type": "scale", "width": 640}),
        MP4,
        [*video_chain("scale=640:360"), *TAIL],
        FILTERED_MP4,
        id="scale-width",
    ),
    pytest.param(
        chain({"type": "scale", "height": 101}),
        MP4,
        [*video_chain("scale=178:100"), *TAIL],
        FILTERED_MP4,
        id="scale-odd-height",
    ),
    pytest.param(
        chain({"type": "scale", "width": 333, "height": 201}),
        MP4,
        [*video_chain("scale=332:200"), *TAIL],
        FILTERED_MP4,
        id="scale-both-odd",
    ),
    pytest.param(
        chain({"type": "scale", "width": 540}),
        ROTATED,
        [*video_chain("scale=540:960"), *TAIL],
        FILTERED_MP4,
        id="scale-rotated-by-displayed-size",
    ),
    # Rotate: right angles as transposes, others with a bounding box.
    pytest.param(
        chain({"type": "rotate", "angle": 90}),
        MP4,
        [*video_chain("transpose=clock"), *TAIL],
        FILTERED_MP4,
        id="rotate-90",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": -90}),
        MP4,
        [*video_chain("transpose=cclock"), *TAIL],
        FILTERED_MP4,
        id="rotate-minus-90",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 270}),
        MP4,
        [*video_chain("transpose=cclock"), *TAIL],
        FILTERED_MP4,
        id="rotate-270",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 180}),
        MP4,
        [*video_chain("hflip,vflip"), *TAIL],
        FILTERED_MP4,
        id="rotate-180",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 45}),
        MP4,
        [*video_chain("rotate=0.785398:ow=1414:oh=1414:c=black"), *TAIL],
        FILTERED_MP4,
        id="rotate-45-bounding-box",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": -30}),
        ODD,
        # -30 is 330 degrees; the 321x241 frame's box is 398.5x369.2: ceil and even give 398x370.
        [*video_chain("rotate=5.759587:ow=398:oh=370:c=black"), *TAIL],
        FILTERED_MP4,
        id="rotate-minus-30-odd-size",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 30}),
        SILENT,
        # The 320x240 frame's box is 397.1x367.9: rounded up (398x368) so no corner is cut.
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "rotate=0.523599:ow=398:oh=368:c=black",
            *X264,
            *TAIL,
        ],
        FILTERED_MP4,
        id="rotate-30-box-rounded-up",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 360}),
        MP4,
        # No change at all: the video is copied, not re-encoded.
        [*reading(), "-map", "0:0", "-c:v", "copy", "-map", "0:1", "-c:a", "copy", *TAIL],
        FILTERED_MP4,
        id="rotate-360-is-a-no-op",
    ),
    # Crop: position and size; an odd result is evened after the chain.
    pytest.param(
        chain({"type": "crop", "width": 640, "height": 360, "x": 320, "y": 180}),
        MP4,
        [*video_chain("crop=640:360:320:180"), *TAIL],
        FILTERED_MP4,
        id="crop",
    ),
    pytest.param(
        chain({"type": "crop", "width": 101, "height": 51, "x": 10, "y": 20}),
        MP4,
        [*video_chain("crop=101:51:10:20,scale=100:50"), *TAIL],
        FILTERED_MP4,
        id="crop-odd-evened",
    ),
    pytest.param(
        chain({"type": "crop", "width": 1280, "height": 720}),
        MP4,
        [*video_chain("crop=1280:720:0:0"), *TAIL],
        FILTERED_MP4,
        id="crop-whole-frame",
    ),
    pytest.param(
        chain({"type": "fps", "fps": 12.5}),
        MP4,
        [*video_chain("fps=12.5"), *TAIL],
        FILTERED_MP4,
        id="fps",
    ),
    pytest.param(
        chain({"type": "fps", "fps": 24}),
        ODD,
        [*video_chain("fps=24,scale=320:240"), *TAIL],
        FILTERED_MP4,
        id="fps-odd-size-evened",
    ),
    # Chains: each filter sees the size the one before it produced.
    pytest.param(
        chain({"type": "rotate", "angle": 90}, {"type": "crop", "width": 300, "height": 1000}),
        MP4,
        [*video_chain("transpose=clock,crop=300:1000:0:0"), *TAIL],
        FILTERED_MP4,
        id="rotate-then-crop-portrait",
    ),
    pytest.param(
        chain(
            {"type": "crop", "width": 721, "height": 401, "x": 1},
            {"type": "scale", "width": 360},
            {"type": "fps", "fps": 10},
        ),
        MP4,
        [*video_chain("crop=721:401:1:0,scale=360:200,fps=10"), *TAIL],
        FILTERED_MP4,
        id="crop-scale-fps",
    ),
    # Audio filters: the video is copied untouched.
    pytest.param(
        chain({"type": "volume", "volume": 1.5}),
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-filter:a",
            "volume=1.5",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="volume",
    ),
    pytest.param(
        chain({"type": "volume", "volume": 0}),
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-filter:a",
            "volume=0",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="volume-mute",
    ),
    pytest.param(
        chain({"type": "normalize"}),
        MP4,
        # loudnorm works at 192 kHz: back to the input's own rate.
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-filter:a",
            "loudnorm=I=-16:TP=-1.5:LRA=11,aformat=sample_rates=48000",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="normalize-default",
    ),
    pytest.param(
        chain({"type": "volume", "volume": 2}),
        WEBM,
        # VP9 fits MP4 and is copied; Opus is re-encoded anyway by the audio chain.
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-filter:a",
            "volume=2",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="volume-webm-input",
    ),
    pytest.param(
        chain({"type": "volume", "volume": 2}),
        WMV,
        # WMV3 cannot go into MP4: re-encoded, evened from 321x241.
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "scale=320:240",
            *X264,
            "-map",
            "0:1",
            "-filter:a",
            "volume=2",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="volume-video-cannot-be-copied",
    ),
    # Mixed chain: both encoded.
    pytest.param(
        chain({"type": "scale", "width": 640}, {"type": "volume", "volume": 0.5}),
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "scale=640:360",
            *X264,
            "-map",
            "0:1",
            "-filter:a",
            "volume=0.5",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="video-and-audio",
    ),
    # Video-only chains: audio copied when MP4 can hold it, else encoded.
    pytest.param(
        chain({"type": "scale", "width": 640}),
        MKV_MP3,
        [*video_chain("scale=640:360"), *TAIL],
        FILTERED_MP4,
        id="mp3-audio-copied",
    ),
    pytest.param(
        chain({"type": "scale", "width": 320}),
        WEBM,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "scale=320:180",
            *X264,
            "-map",
            "0:1",
            *AAC,
            *TAIL,
        ],
        FILTERED_MP4,
        id="opus-audio-encoded",
    ),
    pytest.param(
        chain({"type": "crop", "width": 100, "height": 100}),
        SILENT,
        [*reading(), "-map", "0:0", "-filter:v", "crop=100:100:0:0", *X264, *TAIL],
        FILTERED_MP4,
        id="video-without-audio",
    ),
    # Audio-only inputs stay in their family.
    pytest.param(
        chain({"type": "normalize", "target_lufs": -23}, {"type": "volume", "volume": 0.5}),
        WAV,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:a",
            "loudnorm=I=-23:TP=-1.5:LRA=11,volume=0.5,aformat=sample_rates=44100",
            "-c:a",
            "pcm_s16le",
            "-sn",
            "-dn",
            "-f",
            "wav",
            out("output.wav"),
        ],
        ("/jobs/j1/output.wav", "clip_filtered.wav", "wav"),
        id="audio-only-wav",
    ),
    pytest.param(
        chain({"type": "volume", "volume": 0.8}),
        MP3,
        [
            *reading(),
            "-map",
            "0:1",
            "-filter:a",
            "volume=0.8",
            *MP3_Q2,
            "-sn",
            "-dn",
            "-f",
            "mp3",
            out("output.mp3"),
        ],
        ("/jobs/j1/output.mp3", "clip_filtered.mp3", "mp3"),
        id="audio-only-mp3-skips-cover-art",
    ),
    # Still images: one PNG out, no even-size fix needed.
    pytest.param(
        chain({"type": "scale", "width": 400}, {"type": "rotate", "angle": 270}),
        PNG,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "scale=400:300,transpose=cclock",
            "-frames:v",
            "1",
            "-c:v",
            "png",
            "-update",
            "1",
            "-sn",
            "-dn",
            "-f",
            "image2",
            out("output.png"),
        ],
        ("/jobs/j1/output.png", "clip_filtered.png", "png"),
        id="image-scale-rotate",
    ),
    pytest.param(
        chain({"type": "crop", "width": 401, "height": 301, "x": 400, "y": 300}),
        PNG,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "crop=401:301:400:300",
            "-frames:v",
            "1",
            "-c:v",
            "png",
            "-update",
            "1",
            "-sn",
            "-dn",
            "-f",
            "image2",
            out("output.png"),
        ],
        ("/jobs/j1/output.png", "clip_filtered.png", "png"),
        id="image-odd-crop-kept",
    ),
    pytest.param(
        chain({"type": "rotate", "angle": 0}),
        PNG,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "null",
            "-frames:v",
            "1",
            "-c:v",
            "png",
            "-update",
            "1",
            "-sn",
            "-dn",
            "-f",
            "image2",
            out("output.png"),
        ],
        ("/jobs/j1/output.png", "clip_filtered.png", "png"),
        id="image-no-op",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output"), FILTER_CASES)
def test_filter(
    raw: dict[str, Any], media: MediaInfo, args: list[str], output: tuple[str, str, str]
) -> None:
    result = plan("filter", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == media.duration  # None for a still image
    assert result.stage == "processing"
    assert_inputs_guarded(result.args)


@pytest.mark.parametrize(
    ("raw", "media", "code", "details"),
    [
        pytest.param(
            chain({"type": "crop", "width": 1280, "height": 720, "x": 1}),
            MP4,
            ErrorCode.VALIDATION_ERROR,
            {"field": "$.options.filters[0]"},
            id="crop-past-the-edge",
        ),
        pytest.param(
            chain({"type": "rotate", "angle": 90}, {"type": "crop", "width": 1280, "height": 720}),
            MP4,
            ErrorCode.VALIDATION_ERROR,
            {"field": "$.options.filters[1]"},
            id="crop-checked-against-rotated-frame",
        ),
        pytest.param(
            chain({"type": "crop", "width": 100, "height": 720, "y": 1}),
            MP4,
            ErrorCode.VALIDATION_ERROR,
            {"field": "$.options.filters[0]"},
            id="crop-past-the-bottom",
        ),
        pytest.param(
            chain({"type": "scale", "width": 100}, {"type": "crop", "width": 101, "height": 2}),
            MP4,
            ErrorCode.VALIDATION_ERROR,
            {"field": "$.options.filters[1]"},
            id="crop-checked-against-scaled-frame",
        ),
        pytest.param(
            chain({"type": "volume", "volume": 2}),
            SILENT,
            ErrorCode.NO_AUDIO_STREAM,
            None,
            id="volume-without-audio",
        ),
        pytest.param(
            chain({"type": "scale", "width": 640}, {"type": "normalize"}),
            SILENT,
            ErrorCode.NO_AUDIO_STREAM,
            None,
            id="normalize-without-audio",
        ),
        pytest.param(
            chain({"type": "volume", "volume": 2}),
            PNG,
            ErrorCode.NO_AUDIO_STREAM,
            None,
            id="volume-on-image",
        ),
        pytest.param(
            chain({"type": "scale", "width": 640}),
            WAV,
            ErrorCode.NO_VIDEO_STREAM,
            None,
            id="scale-without-video",
        ),
        pytest.param(
            chain({"type": "rotate", "angle": 90}),
            MP3,
            ErrorCode.NO_VIDEO_STREAM,
            None,
            id="rotate-cover-art-only",
        ),
        pytest.param(
            chain({"type": "fps", "fps": 10}),
            PNG,
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="fps-on-image",
        ),
    ],
)
def test_refusals(
    raw: dict[str, Any], media: MediaInfo, code: str, details: dict[str, Any] | None
) -> None:
    error = refusal("filter", raw, media)
    assert error.code == code
    assert error.details == details
