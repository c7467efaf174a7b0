"""compress, extract_audio, remove_audio and convert: the exact FFmpeg arguments they plan."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ffserve.errors import ErrorCode
from ffserve.media.streams import MediaInfo
from tests.ffmpeg.ops.media import (
    AAC,
    FLAC,
    MP3,
    MP3_Q2,
    MP4,
    MP4_FORMAT,
    ODD,
    OGG,
    OPUS,
    PNG,
    ROTATED,
    SILENT,
    TO_MP4,
    VP9,
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
    subtitle,
    video,
)

AVI = info("avi", 4.0, video("h264", 640, 360), audio("mp3", 44100))
GP3 = info(MP4_FORMAT, 4.0, video("h263", 176, 144, 15.0), audio("amr_nb", 8000, 1))
WMV = info("asf", 4.0, video("wmv3", 640, 480), audio("wmav2", 44100))
PRORES = info(MP4_FORMAT, 4.0, video("prores", 1920, 1080), audio("pcm_s16le"))
MPEG_PS = info("mpeg", 4.0, video("mpeg2video", 720, 576), audio("mp2"))
MKV = info("matroska,webm", 4.0, video("h264", 640, 360), audio("aac"))
SUBTITLES_ONLY = info("matroska,webm", 3.0, subtitle(index=0))

# compress uses slower x264/VP9 settings than the other operations, and its own quality.
COMPRESS_X264 = ["-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p"]
COMPRESS_VP9 = [
    "-c:v",
    "libvpx-vp9",
    "-deadline",
    "good",
    "-cpu-used",
    "4",
    "-row-mt",
    "1",
    "-pix_fmt",
    "yuv420p",
]
BOTH = ["-map", "0:0", "-map", "0:1"]
TAIL = ["-sn", "-dn"]
COMPRESSED_MP4 = ("/jobs/j1/output.mp4", "clip_compressed.mp4", "mp4")

COMPRESS_CASES = [
    pytest.param(
        {"preset": "low"},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "32",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="low",
    ),
    pytest.param(
        {},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="medium-by-default",
    ),
    pytest.param(
        {"preset": "high"},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "20",
            "-c:a",
            "aac",
            "-b:a",
            "192k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="high",
    ),
    pytest.param(
        {"preset": "custom", "crf": 18},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "18",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="custom-crf",
    ),
    pytest.param(
        {"preset": "low", "crf": 40, "audio_bitrate_kbps": 48},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "40",
            "-c:a",
            "aac",
            "-b:a",
            "48k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="preset-with-crf-and-audio-override",
    ),
    pytest.param(
        {"preset": "custom", "video_bitrate_kbps": 1000, "audio_bitrate_kbps": 64},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-b:v",
            "1000k",
            "-maxrate",
            "1500k",
            "-bufsize",
            "2000k",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="custom-bitrate",
    ),
    pytest.param(
        {"max_width": 640},
        MP4,
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=640:360",
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="max-width",
    ),
    pytest.param(
        {"max_width": 640, "max_height": 200},
        MP4,
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=356:200",
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="max-width-and-height-tighter-wins",
    ),
    pytest.param(
        {"max_width": 4000},
        ODD,
        # Never enlarged, but the odd 321x241 is evened.
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=320:240",
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="no-upscale-odd-size-evened",
    ),
    pytest.param(
        {},
        ODD,
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=320:240",
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="odd-size-evened-without-limits",
    ),
    pytest.param(
        {"max_height": 960},
        ROTATED,
        # The displayed size (1080x1920) is what is limited, not the stored 1920x1080.
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=540:960",
            *COMPRESS_X264,
            "-crf",
            "26",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *TAIL,
            *TO_MP4,
        ],
        COMPRESSED_MP4,
        id="rotated-max-height",
    ),
    pytest.param(
        {"target_format": "webm"},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_VP9,
            "-crf",
            "36",
            "-b:v",
            "0",
            "-c:a",
            "libopus",
            "-b:a",
            "128k",
            *TAIL,
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_compressed.webm", "webm"),
        id="webm-medium",
    ),
    pytest.param(
        {"target_format": "webm", "preset": "high", "max_width": 320},
        MP4,
        [
            *reading(),
            *BOTH,
            "-filter:v",
            "scale=320:180",
            *COMPRESS_VP9,
            "-crf",
            "31",
            "-b:v",
            "0",
            "-c:a",
            "libopus",
            "-b:a",
            "192k",
            *TAIL,
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_compressed.webm", "webm"),
        id="webm-high-scaled",
    ),
    pytest.param(
        {"target_format": "webm", "preset": "custom", "video_bitrate_kbps": 500},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_VP9,
            "-b:v",
            "500k",
            "-maxrate",
            "750k",
            "-bufsize",
            "1000k",
            "-c:a",
            "libopus",
            "-b:a",
            "128k",
            *TAIL,
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_compressed.webm", "webm"),
        id="webm-custom-bitrate",
    ),
    pytest.param(
        {"target_format": "mkv", "preset": "high"},
        SILENT,
        [
            *reading(),
            "-map",
            "0:0",
            *COMPRESS_X264,
            "-crf",
            "20",
            *TAIL,
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        ("/jobs/j1/output.mkv", "clip_compressed.mkv", "mkv"),
        id="mkv-video-without-audio",
    ),
    pytest.param(
        {"target_format": "mov", "preset": "low"},
        MP4,
        [
            *reading(),
            *BOTH,
            *COMPRESS_X264,
            "-crf",
            "32",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            *TAIL,
            "-f",
            "mov",
            "-movflags",
            "+faststart",
            out("output.mov"),
        ],
        ("/jobs/j1/output.mov", "clip_compressed.mov", "mov"),
        id="mov-low",
    ),
    # Audio-only inputs: the audio alone, lossy, in its own family when that is lossy.
    pytest.param(
        {},
        WAV,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-vn",
            "-f",
            "ipod",
            "-movflags",
            "+faststart",
            out("output.m4a"),
        ],
        ("/jobs/j1/output.m4a", "clip_compressed.m4a", "m4a"),
        id="wav-to-m4a",
    ),
    pytest.param(
        {"preset": "low"},
        FLAC,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-vn",
            "-f",
            "ipod",
            "-movflags",
            "+faststart",
            out("output.m4a"),
        ],
        ("/jobs/j1/output.m4a", "clip_compressed.m4a", "m4a"),
        id="flac-to-m4a-low",
    ),
    pytest.param(
        {},
        MP3,
        # The bitrate replaces LAME's quality setting, it is not added to it.
        [
            *reading(),
            "-map",
            "0:1",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-vn",
            "-f",
            "mp3",
            out("output.mp3"),
        ],
        ("/jobs/j1/output.mp3", "clip_compressed.mp3", "mp3"),
        id="mp3-stays-mp3",
    ),
    pytest.param(
        {"preset": "high"},
        OGG,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:a",
            "libvorbis",
            "-b:a",
            "192k",
            "-vn",
            "-f",
            "ogg",
            out("output.ogg"),
        ],
        ("/jobs/j1/output.ogg", "clip_compressed.ogg", "ogg"),
        id="vorbis-stays-ogg",
    ),
    pytest.param(
        {"target_format": "webm", "audio_bitrate_kbps": 32},
        FLAC,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-vn",
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_compressed.webm", "webm"),
        id="audio-only-to-webm",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output"), COMPRESS_CASES)
def test_compress(
    raw: dict[str, Any], media: MediaInfo, args: list[str], output: tuple[str, str, str]
) -> None:
    result = plan("compress", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == media.duration
    assert result.stage == "processing"
    assert_inputs_guarded(result.args)


EXTRACT_HEAD = [*reading(), "-map", "0:1", "-vn", "-sn", "-dn"]

EXTRACT_CASES = [
    pytest.param(
        {"format": "mp3"},
        MP4,
        [*EXTRACT_HEAD, *MP3_Q2, "-f", "mp3", out("output.mp3")],
        ("/jobs/j1/output.mp3", "clip_audio.mp3", "mp3"),
        id="mp3",
    ),
    pytest.param(
        {},
        MP4,
        [*EXTRACT_HEAD, *MP3_Q2, "-f", "mp3", out("output.mp3")],
        ("/jobs/j1/output.mp3", "clip_audio.mp3", "mp3"),
        id="mp3-by-default",
    ),
    pytest.param(
        {"format": "aac"},
        MP4,
        [*EXTRACT_HEAD, *AAC, "-f", "adts", out("output.aac")],
        ("/jobs/j1/output.aac", "clip_audio.aac", "aac"),
        id="aac-adts",
    ),
    pytest.param(
        {"format": "wav"},
        MP4,
        [*EXTRACT_HEAD, "-c:a", "pcm_s16le", "-f", "wav", out("output.wav")],
        ("/jobs/j1/output.wav", "clip_audio.wav", "wav"),
        id="wav",
    ),
    pytest.param(
        {"format": "opus"},
        MP4,
        [*EXTRACT_HEAD, *OPUS, "-f", "opus", out("output.opus")],
        ("/jobs/j1/output.opus", "clip_audio.opus", "opus"),
        id="opus",
    ),
    pytest.param(
        {"format": "m4a"},
        MP4,
        [*EXTRACT_HEAD, *AAC, "-f", "ipod", "-movflags", "+faststart", out("output.m4a")],
        ("/jobs/j1/output.m4a", "clip_audio.m4a", "m4a"),
        id="m4a",
    ),
    pytest.param(
        {"format": "flac"},
        MP4,
        [*EXTRACT_HEAD, "-c:a", "flac", "-f", "flac", out("output.flac")],
        ("/jobs/j1/output.flac", "clip_audio.flac", "flac"),
        id="flac",
    ),
    pytest.param(
        {"format": "ogg"},
        MP4,
        [*EXTRACT_HEAD, "-c:a", "libvorbis", "-q:a", "5", "-f", "ogg", out("output.ogg")],
        ("/jobs/j1/output.ogg", "clip_audio.ogg", "ogg"),
        id="ogg",
    ),
    pytest.param(
        {"format": "mp3", "bitrate_kbps": 320, "sample_rate": 22050},
        MP4,
        [
            *EXTRACT_HEAD,
            "-c:a",
            "libmp3lame",
            "-b:a",
            "320k",
            "-ar",
            "22050",
            "-f",
            "mp3",
            out("output.mp3"),
        ],
        ("/jobs/j1/output.mp3", "clip_audio.mp3", "mp3"),
        id="mp3-bitrate-and-rate",
    ),
    pytest.param(
        {"format": "opus", "bitrate_kbps": 64, "sample_rate": 24000},
        MP4,
        [
            *EXTRACT_HEAD,
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-ar",
            "24000",
            "-f",
            "opus",
            out("output.opus"),
        ],
        ("/jobs/j1/output.opus", "clip_audio.opus", "opus"),
        id="opus-bitrate-and-rate",
    ),
    pytest.param(
        {"format": "flac", "bitrate_kbps": 64, "sample_rate": 96000},
        MP4,
        # A bitrate means nothing to a lossless encoder: left out, not passed on.
        [*EXTRACT_HEAD, "-c:a", "flac", "-ar", "96000", "-f", "flac", out("output.flac")],
        ("/jobs/j1/output.flac", "clip_audio.flac", "flac"),
        id="lossless-ignores-bitrate",
    ),
    pytest.param(
        {"format": "wav"},
        MP3,
        [*EXTRACT_HEAD, "-c:a", "pcm_s16le", "-f", "wav", out("output.wav")],
        ("/jobs/j1/output.wav", "clip_audio.wav", "wav"),
        id="mp3-with-cover-art",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output"), EXTRACT_CASES)
def test_extract_audio(
    raw: dict[str, Any], media: MediaInfo, args: list[str], output: tuple[str, str, str]
) -> None:
    result = plan("extract_audio", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.expected_duration == media.duration
    assert_inputs_guarded(result.args)


def test_extract_audio_without_duration_expects_none() -> None:
    media = info("mpegts", None, video(), audio("mp3", index=1))
    result = plan("extract_audio", {"format": "mp3"}, media)
    assert list(result.args) == [*EXTRACT_HEAD, *MP3_Q2, "-f", "mp3", out("output.mp3")]
    assert result.expected_duration is None


COPY = "processing (stream copy)"
REENCODE = "processing (re-encoding video)"
NOAUDIO_HEAD = [*reading(), "-map", "0:0", "-an", "-sn", "-dn"]

REMOVE_AUDIO_CASES = [
    pytest.param(
        {},
        MP4,
        [*NOAUDIO_HEAD, "-c:v", "copy", *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_noaudio.mp4", "mp4"),
        COPY,
        id="mp4-copy",
    ),
    pytest.param(
        {},
        ODD,
        # A copy keeps the odd size and 4:4:4: nothing is encoded.
        [*NOAUDIO_HEAD, "-c:v", "copy", *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_noaudio.mp4", "mp4"),
        COPY,
        id="odd-size-copy",
    ),
    pytest.param(
        {},
        MKV,
        [*NOAUDIO_HEAD, "-c:v", "copy", "-f", "matroska", out("output.mkv")],
        ("/jobs/j1/output.mkv", "clip_noaudio.mkv", "mkv"),
        COPY,
        id="mkv-copy",
    ),
    pytest.param(
        {},
        WEBM,
        [*NOAUDIO_HEAD, "-c:v", "copy", "-f", "webm", out("output.webm")],
        ("/jobs/j1/output.webm", "clip_noaudio.webm", "webm"),
        COPY,
        id="webm-vp9-copy-stays-webm",
    ),
    pytest.param(
        {},
        AVI,
        [
            *NOAUDIO_HEAD,
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "avi",
            out("output.avi"),
        ],
        ("/jobs/j1/output.avi", "clip_noaudio.avi", "avi"),
        COPY,
        id="avi-h264-annexb",
    ),
    pytest.param(
        {},
        GP3,
        [*NOAUDIO_HEAD, "-c:v", "copy", "-f", "mov", "-movflags", "+faststart", out("output.mov")],
        ("/jobs/j1/output.mov", "clip_noaudio.mov", "mov"),
        COPY,
        id="3gp-h263-into-mov",
    ),
    pytest.param(
        {},
        PRORES,
        [*NOAUDIO_HEAD, "-c:v", "copy", "-f", "mov", "-movflags", "+faststart", out("output.mov")],
        ("/jobs/j1/output.mov", "clip_noaudio.mov", "mov"),
        COPY,
        id="prores-into-mov",
    ),
    pytest.param(
        {},
        MPEG_PS,
        # A program stream's packets may lack timestamps: the demuxer generates them.
        ["-fflags", "+genpts", *NOAUDIO_HEAD, "-c:v", "copy", "-f", "mpegts", out("output.ts")],
        ("/jobs/j1/output.ts", "clip_noaudio.ts", "ts"),
        COPY,
        id="mpeg-ps-into-ts",
    ),
    pytest.param(
        {},
        WMV,
        [*NOAUDIO_HEAD, *X264, *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_noaudio.mp4", "mp4"),
        REENCODE,
        id="wmv-cannot-be-copied",
    ),
    pytest.param(
        {"keep_video_quality": False},
        ODD,
        [*NOAUDIO_HEAD, "-filter:v", "scale=320:240", *X264, *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_noaudio.mp4", "mp4"),
        REENCODE,
        id="reencode-odd-size-evened",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output", "stage"), REMOVE_AUDIO_CASES)
def test_remove_audio(
    raw: dict[str, Any],
    media: MediaInfo,
    args: list[str],
    output: tuple[str, str, str],
    stage: str,
) -> None:
    result = plan("remove_audio", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.stage == stage
    assert result.expected_duration == media.duration
    assert_inputs_guarded(result.args)


CONVERT_CASES = [
    pytest.param(
        {"target_format": "mkv", "stream_copy": True},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-c:a",
            "copy",
            *TAIL,
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        ("/jobs/j1/output.mkv", "clip_converted.mkv", "mkv"),
        "processing",
        id="mkv-copy-both",
    ),
    pytest.param(
        {"target_format": "mp4"},
        MP4,
        [*reading(), "-map", "0:0", *X264, "-map", "0:1", *AAC, *TAIL, *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_converted.mp4", "mp4"),
        "processing",
        id="mp4-reencode-by-default",
    ),
    pytest.param(
        {"target_format": "avi", "stream_copy": True},
        MP4,
        # H.264 copied (to Annex B for AVI); AAC cannot go into AVI so falls back to MP3.
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-map",
            "0:1",
            *MP3_Q2,
            *TAIL,
            "-f",
            "avi",
            out("output.avi"),
        ],
        ("/jobs/j1/output.avi", "clip_converted.avi", "avi"),
        "processing (re-encoding: audio aac cannot be copied into avi)",
        id="avi-copy-audio-falls-back",
    ),
    pytest.param(
        {"target_format": "webm", "stream_copy": True},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            *VP9,
            "-map",
            "0:1",
            *OPUS,
            *TAIL,
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_converted.webm", "webm"),
        "processing (re-encoding: video h264 cannot be copied into webm; "
        "audio aac cannot be copied into webm)",
        id="webm-copy-falls-back-to-reencode",
    ),
    pytest.param(
        {"target_format": "webm", "stream_copy": True},
        ODD,
        [
            *reading(),
            "-map",
            "0:0",
            "-filter:v",
            "scale=320:240",
            *VP9,
            "-map",
            "0:1",
            *OPUS,
            *TAIL,
            "-f",
            "webm",
            out("output.webm"),
        ],
        ("/jobs/j1/output.webm", "clip_converted.webm", "webm"),
        "processing (re-encoding: video h264 cannot be copied into webm; "
        "audio aac cannot be copied into webm)",
        id="webm-fallback-evens-odd-size",
    ),
    pytest.param(
        {"target_format": "mp4", "stream_copy": True, "video_codec": "hevc"},
        MP4,
        # A codec asked for is encoded (no note: nothing failed to copy); audio still copied.
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "libx265",
            "-preset",
            "veryfast",
            "-crf",
            "24",
            "-pix_fmt",
            "yuv420p",
            "-map",
            "0:1",
            "-c:a",
            "copy",
            *TAIL,
            *TO_MP4,
        ],
        ("/jobs/j1/output.mp4", "clip_converted.mp4", "mp4"),
        "processing",
        id="copy-with-other-video-codec",
    ),
    pytest.param(
        {"target_format": "mp4", "stream_copy": True, "video_codec": "h264", "audio_codec": "aac"},
        MKV,
        [*reading(), "-map", "0:0", "-c:v", "copy", "-map", "0:1", "-c:a", "copy", *TAIL, *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_converted.mp4", "mp4"),
        "processing",
        id="copy-with-the-codecs-it-has",
    ),
    pytest.param(
        {"target_format": "mkv", "video_codec": "vp8", "audio_codec": "vorbis"},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-crf",
            "10",
            "-b:v",
            "2M",
            "-pix_fmt",
            "yuv420p",
            "-map",
            "0:1",
            "-c:a",
            "libvorbis",
            "-q:a",
            "5",
            *TAIL,
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        ("/jobs/j1/output.mkv", "clip_converted.mkv", "mkv"),
        "processing",
        id="mkv-vp8-vorbis",
    ),
    pytest.param(
        {"target_format": "mkv", "video_codec": "av1", "audio_codec": "opus"},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "libsvtav1",
            "-preset",
            "10",
            "-crf",
            "35",
            "-pix_fmt",
            "yuv420p",
            "-map",
            "0:1",
            *OPUS,
            *TAIL,
            "-f",
            "matroska",
            out("output.mkv"),
        ],
        ("/jobs/j1/output.mkv", "clip_converted.mkv", "mkv"),
        "processing",
        id="mkv-av1-opus",
    ),
    pytest.param(
        {"target_format": "avi", "video_codec": "mpeg4", "audio_codec": "ac3"},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "mpeg4",
            "-q:v",
            "4",
            "-pix_fmt",
            "yuv420p",
            "-map",
            "0:1",
            "-c:a",
            "ac3",
            "-b:a",
            "192k",
            *TAIL,
            "-f",
            "avi",
            out("output.avi"),
        ],
        ("/jobs/j1/output.avi", "clip_converted.avi", "avi"),
        "processing",
        id="avi-mpeg4-ac3",
    ),
    pytest.param(
        {"target_format": "mov", "audio_codec": "pcm"},
        MP4,
        [
            *reading(),
            "-map",
            "0:0",
            *X264,
            "-map",
            "0:1",
            "-c:a",
            "pcm_s16le",
            *TAIL,
            "-f",
            "mov",
            "-movflags",
            "+faststart",
            out("output.mov"),
        ],
        ("/jobs/j1/output.mov", "clip_converted.mov", "mov"),
        "processing",
        id="mov-pcm",
    ),
    pytest.param(
        {"target_format": "ogv"},
        ROTATED,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "libtheora",
            "-q:v",
            "7",
            "-pix_fmt",
            "yuv420p",
            "-map",
            "0:1",
            "-c:a",
            "libvorbis",
            "-q:a",
            "5",
            *TAIL,
            "-f",
            "ogg",
            out("output.ogv"),
        ],
        ("/jobs/j1/output.ogv", "clip_converted.ogv", "ogv"),
        "processing",
        id="ogv-theora-vorbis",
    ),
    pytest.param(
        {"target_format": "ts", "stream_copy": True},
        AVI,
        [
            *reading(),
            "-map",
            "0:0",
            "-c:v",
            "copy",
            "-map",
            "0:1",
            "-c:a",
            "copy",
            *TAIL,
            "-f",
            "mpegts",
            out("output.ts"),
        ],
        ("/jobs/j1/output.ts", "clip_converted.ts", "ts"),
        "processing",
        id="ts-copy-both",
    ),
    pytest.param(
        {"target_format": "mp3"},
        MP4,
        [*reading(), "-map", "0:1", *MP3_Q2, *TAIL, "-f", "mp3", out("output.mp3")],
        ("/jobs/j1/output.mp3", "clip_converted.mp3", "mp3"),
        "processing",
        id="to-audio-only-drops-video",
    ),
    pytest.param(
        {"target_format": "mp3", "stream_copy": True},
        MP3,
        [*reading(), "-map", "0:1", "-c:a", "copy", *TAIL, "-f", "mp3", out("output.mp3")],
        ("/jobs/j1/output.mp3", "clip_converted.mp3", "mp3"),
        "processing",
        id="mp3-copy-skips-cover-art",
    ),
    pytest.param(
        {"target_format": "wav", "stream_copy": True},
        FLAC,
        [*reading(), "-map", "0:0", "-c:a", "pcm_s16le", *TAIL, "-f", "wav", out("output.wav")],
        ("/jobs/j1/output.wav", "clip_converted.wav", "wav"),
        "processing (re-encoding: audio flac cannot be copied into wav)",
        id="audio-copy-falls-back",
    ),
    pytest.param(
        {"target_format": "mp4"},
        WAV,
        [*reading(), "-map", "0:0", *AAC, *TAIL, *TO_MP4],
        ("/jobs/j1/output.mp4", "clip_converted.mp4", "mp4"),
        "processing",
        id="audio-into-video-container",
    ),
]


@pytest.mark.parametrize(("raw", "media", "args", "output", "stage"), CONVERT_CASES)
def test_convert(
    raw: dict[str, Any],
    media: MediaInfo,
    args: list[str],
    output: tuple[str, str, str],
    stage: str,
) -> None:
    result = plan("convert", raw, media)
    assert list(result.args) == args
    assert outputs(result) == [output]
    assert result.stage == stage
    assert result.expected_duration == media.duration
    assert_inputs_guarded(result.args)


@pytest.mark.parametrize(
    ("operation", "raw", "media", "code", "field"),
    [
        pytest.param("compress", {}, PNG, ErrorCode.UNSUPPORTED_MEDIA, None, id="compress-image"),
        pytest.param(
            "extract_audio", {}, SILENT, ErrorCode.NO_AUDIO_STREAM, None, id="extract-no-audio"
        ),
        pytest.param(
            "extract_audio", {}, PNG, ErrorCode.NO_AUDIO_STREAM, None, id="extract-from-image"
        ),
        pytest.param(
            "remove_audio", {}, WAV, ErrorCode.NO_VIDEO_STREAM, None, id="remove-from-audio"
        ),
        pytest.param(
            "remove_audio", {}, MP3, ErrorCode.NO_VIDEO_STREAM, None, id="remove-cover-art-only"
        ),
        pytest.param(
            "remove_audio", {}, PNG, ErrorCode.UNSUPPORTED_MEDIA, None, id="remove-from-image"
        ),
        pytest.param(
            "convert",
            {"target_format": "mp4", "audio_codec": "pcm"},
            MP4,
            ErrorCode.VALIDATION_ERROR,
            "$.options.audio_codec",
            id="convert-mp4-cannot-hold-pcm",
        ),
        pytest.param(
            "convert",
            {"target_format": "webm", "video_codec": "h264"},
            MP4,
            ErrorCode.VALIDATION_ERROR,
            "$.options.video_codec",
            id="convert-webm-cannot-hold-h264",
        ),
        pytest.param(
            "convert",
            {"target_format": "mp3", "video_codec": "h264"},
            MP4,
            ErrorCode.VALIDATION_ERROR,
            "$.options.video_codec",
            id="convert-audio-format-with-video-codec",
        ),
        pytest.param(
            "convert",
            {"target_format": "flac"},
            SILENT,
            ErrorCode.NO_AUDIO_STREAM,
            None,
            id="convert-to-audio-without-audio",
        ),
        pytest.param(
            "convert",
            {"target_format": "mp4"},
            PNG,
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="convert-image",
        ),
        pytest.param(
            "convert",
            {"target_format": "mkv"},
            SUBTITLES_ONLY,
            ErrorCode.UNSUPPORTED_MEDIA,
            None,
            id="convert-nothing-to-convert",
        ),
    ],
)
def test_refusals(
    operation: str, raw: dict[str, Any], media: MediaInfo, code: str, field: str | None
) -> None:
    error = refusal(operation, raw, media)
    assert error.code == code
    if field is not None:
        assert error.details == {"field": field}


def test_compress_refuses_input_without_audio_or_video() -> None:
    assert refusal("compress", {}, SUBTITLES_ONLY).code == ErrorCode.UNSUPPORTED_MEDIA


def test_convert_of_a_program_stream_generates_timestamps_and_can_fall_back() -> None:
    """Copied packets need a pts: the demuxer generates them (-fflags +genpts); where
    even that fails ('unknown timestamp'), the plan's last resort re-encodes."""
    result = plan("convert", {"target_format": "mkv", "stream_copy": True}, MPEG_PS)
    assert list(result.args[:2]) == ["-fflags", "+genpts"]
    assert list(result.args[result.args.index("-c:v") :][:2]) == ["-c:v", "copy"]
    fallback = result.fallback
    assert fallback is not None and result.fallback_on == "unknown timestamp"
    assert list(fallback.args[:2]) == ["-fflags", "+genpts"]
    assert "copy" not in fallback.args
    assert "mpeg2video" not in fallback.args  # re-encoded to the container's default
    assert fallback.stage == "processing (re-encoding: the input lacks timestamps)"
    assert [o.path for o in fallback.outputs] == [o.path for o in result.outputs]
    assert fallback.fallback is None


def test_convert_needs_no_fallback_when_nothing_is_copied_or_timestamps_are_there() -> None:
    assert plan("convert", {"target_format": "mp4", "stream_copy": True}, MPEG_PS).fallback is None
    assert plan("convert", {"target_format": "mkv", "stream_copy": True}, MKV).fallback is None


def hiding(media: MediaInfo, *, video: float = 0.0, audio: float = 0.0) -> MediaInfo:
    """`media` with that much of its video and audio hidden by an MP4 edit list."""
    hidden = {"video": video, "audio": audio}
    streams = tuple(attrs.evolve(s, hidden_s=hidden.get(s.kind, 0.0)) for s in media.streams)
    return attrs.evolve(media, streams=streams)


def test_convert_copy_into_mkv_reencodes_what_an_edit_list_hides() -> None:
    """Matroska keeps no edit list: a copy would show the hidden half second, so that
    stream is re-encoded (decoding honours the edit list), and the stage says why."""
    result = plan("convert", {"target_format": "mkv", "stream_copy": True}, hiding(MP4, video=0.5))
    args = list(result.args)
    assert args[args.index("-c:v") + 1] == "libx264"
    assert args[args.index("-c:a") + 1] == "copy"  # the audio hides nothing
    assert result.stage == (
        "processing (re-encoding: an edit list hides 0.5 s of the video, "
        "which a copy into mkv would show)"
    )
    audio_hidden = plan(
        "convert", {"target_format": "mkv", "stream_copy": True}, hiding(MP4, audio=1.0)
    )
    args = list(audio_hidden.args)
    assert args[args.index("-c:v") + 1] == "copy"
    assert args[args.index("-c:a") + 1] == "aac"


def test_convert_copy_keeps_edit_lists_mp4_can_hold_and_priming() -> None:
    # MP4's muxer writes the edit list again; encoder priming (1024 samples) is within
    # what the promise allows.
    into_mp4 = plan(
        "convert", {"target_format": "mp4", "stream_copy": True}, hiding(MP4, video=0.5)
    )
    assert list(into_mp4.args).count("copy") == 2
    priming = plan(
        "convert", {"target_format": "mkv", "stream_copy": True}, hiding(MP4, audio=0.021)
    )
    assert list(priming.args).count("copy") == 2
    assert priming.stage == "processing"
