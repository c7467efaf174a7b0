"""Probed inputs for the planner tests, built by hand: no file and no FFmpeg is involved.

The whitelist below is spelled out on purpose rather than imported, so that a planner
reading an input without it (or with a different one) fails the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ffserve.errors import JobError
from ffserve.ffmpeg.ops import Plan, Source, build_plan
from ffserve.media.streams import MediaInfo, Stream, parse_probe
from ffserve.wire.options import parse_options

WORKDIR = Path("/jobs/j1")
FORMATS = (
    "mov,matroska,webm,avi,mpegts,mpeg,ogg,flv,asf,mp3,aac,wav,w64,flac,aiff,caf,amr,"
    "png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,gif,srt,ass,webvtt"
)
MP4_FORMAT = "mov,mp4,m4a,3gp,3g2,mj2"


def reading(name: str = "input") -> list[str]:
    """The input options every planner must put before each `-i` of an uploaded file."""
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMATS,
        "-i",
        f"file:/jobs/j1/{name}",
    ]


def out(name: str) -> str:
    return f"file:/jobs/j1/{name}"


# The default encoders, spelled out (not imported) so that a change to them shows.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
VP9 = [
    "-c:v",
    "libvpx-vp9",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-row-mt",
    "1",
    "-crf",
    "32",
    "-b:v",
    "0",
    "-pix_fmt",
    "yuv420p",
]
AAC = ["-c:a", "aac", "-b:a", "160k"]
OPUS = ["-c:a", "libopus", "-b:a", "128k"]
MP3_Q2 = ["-c:a", "libmp3lame", "-q:a", "2"]
TO_MP4 = ["-f", "mp4", "-movflags", "+faststart", "file:/jobs/j1/output.mp4"]


def video(
    codec: str = "h264",
    width: int = 1280,
    height: int = 720,
    fps: float | None = 25.0,
    *,
    index: int = 0,
    rotation: int = 0,
    profile: str | None = None,
) -> Stream:
    return Stream(index, "video", codec, profile, width, height, fps, rotation)


def audio(
    codec: str = "aac", rate: int | None = 48000, channels: int = 2, *, index: int = 1
) -> Stream:
    return Stream(index, "audio", codec, sample_rate=rate, channels=channels)


def subtitle(codec: str = "subrip", *, index: int) -> Stream:
    return Stream(index, "subtitle", codec)


def info(fmt: str, duration: float | None, *streams: Stream) -> MediaInfo:
    return MediaInfo(fmt, duration, 1_000_000, None, streams)


def source(media: MediaInfo, filename: str = "clip.mp4", path: str = "input") -> Source:
    return Source(WORKDIR / path, media, filename)


# A typical upload: 10 s of 1280x720 H.264 at 25 fps with stereo AAC at 48 kHz.
MP4 = info(MP4_FORMAT, 10.0, video(), audio())
# Odd-sized 4:4:4 video at 30 fps, AAC at 44.1 kHz: every re-encode must even it.
ODD = info(MP4_FORMAT, 1.0, video(width=321, height=241, fps=30.0), audio(rate=44100))
# A phone video: stored 1920x1080 with a -90 degree display matrix, shown 1080x1920.
ROTATED = parse_probe(
    json.dumps(
        {
            "format": {"format_name": MP4_FORMAT, "duration": "4.000000", "size": "1000"},
            "streams": [
                {
                    "index": 0,
                    "codec_type": "video",
                    "codec_name": "h264",
                    "width": 1920,
                    "height": 1080,
                    "avg_frame_rate": "30000/1001",
                    "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}],
                },
                {
                    "index": 1,
                    "codec_type": "audio",
                    "codec_name": "aac",
                    "sample_rate": "48000",
                    "channels": 2,
                },
            ],
        }
    ).encode()
)
# Video without audio.
SILENT = info(MP4_FORMAT, 2.0, video(width=320, height=240))
# Audio only, in several families.
WAV = info("wav", 3.0, audio("pcm_s16le", 44100, 1, index=0))
FLAC = info("flac", 3.0, audio("flac", 44100, 2, index=0))
OGG = info("ogg", 3.0, audio("vorbis", 44100, 2, index=0))
# An MP3 with cover art: the picture (stream 0) is not video.
MP3 = info(
    "mp3",
    3.0,
    Stream(0, "video", "mjpeg", width=500, height=500, is_cover_art=True),
    audio("mp3", 44100, index=1),
)
# A still image: no duration.
PNG = info("png_pipe", None, video("png", 801, 601, None))
# WebM (probes as matroska) with VP9 and Opus.
WEBM = info("matroska,webm", 5.0, video("vp9", 640, 360, 30.0), audio("opus", 48000))
# Matroska with H.264, AAC, a text and a picture subtitle, and another text one.
MKV_SUBS = info(
    "matroska,webm",
    6.0,
    video(width=640, height=360),
    audio(),
    subtitle("subrip", index=2),
    subtitle("hdmv_pgs_subtitle", index=3),
    subtitle("ass", index=4),
)
# An uploaded subtitle file.
SRT = info("srt", None, subtitle("subrip", index=0))


def plan(
    operation: str, raw: dict[str, Any], *sources: Source | MediaInfo, workdir: Path = WORKDIR
) -> Plan:
    """Validate `raw` as the server does and plan the operation on `sources`."""
    options = parse_options(operation, raw)
    inputs = [s if isinstance(s, Source) else source(s) for s in sources]
    return build_plan(operation, options, inputs, workdir)


def outputs(result: Plan) -> list[tuple[str, str, str]]:
    """Each output as (path in the job dir, client-facing filename, container)."""
    return [(str(o.path), o.filename, o.container) for o in result.outputs]


def assert_inputs_guarded(args: tuple[str, ...]) -> None:
    """Every `-i` reads a `file:` path in the job dir and has its own protocol and format
    whitelists among the input options given since the previous input."""
    inputs = [i for i, a in enumerate(args) if a == "-i"]
    assert inputs, "no input at all"
    start = 0
    for i in inputs:
        options = list(args[start:i])
        assert "-protocol_whitelist" in options and "-format_whitelist" in options
        assert options[options.index("-protocol_whitelist") + 1] == "file"
        assert args[i + 1].startswith("file:/jobs/j1/")
        start = i + 2


def refusal(operation: str, raw: dict[str, Any], *sources: Source | MediaInfo) -> JobError:
    with pytest.raises(JobError) as caught:
        plan(operation, raw, *sources)
    return caught.value
