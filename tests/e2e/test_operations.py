"""Every operation end to end: real sockets, real FFmpeg, outputs verified by probing them.

The clips come from the `media` fixture (lavfi sources). Expected durations and sizes are
derived from the input's own probe and the operation's meaning, with tolerances of a frame
or two (and an audio frame for AAC priming), never from a previous run's output.
"""

from __future__ import annotations

import array
import itertools
import math
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import (
    Client,
    JobResult,
    connect,
    duration,
    ffmpeg,
    integrated_loudness,
    mean_volume,
    packet_hash,
    probe,
    streams,
)

FRAME = 1 / 25  # the clips' frame duration (testsrc2 at 25 fps)
AAC_FRAME = 1024 / 44100  # one AAC frame at the clips' sample rate; priming is one more


# --- checking tools (plain FFmpeg, independent of the service) -------------------------


def frame_at(path: Path, when: float, out: Path, vf: str = "null") -> Path:
    """The frame of `path` shown at `when` seconds, as PNG, via plain FFmpeg."""
    ffmpeg("-ss", str(when), "-i", str(path), "-frames:v", "1", "-vf", vf, str(out))
    return out


PSNR_TAIL = ("-frames:v", "1", "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-")


def psnr(a: Path, b: Path) -> float:
    """Average PSNR in dB between the first frames of two same-sized pictures."""
    out = subprocess.run(
        [*("ffmpeg", "-hide_banner", "-nostats", "-i", str(a), "-i", str(b)), *PSNR_TAIL],
        check=True,
        capture_output=True,
        text=True,
    )
    value = out.stderr.rsplit("average:", 1)[1].split()[0]
    return math.inf if value == "inf" else float(value)


COUNT = ("-show_entries", "stream=nb_read_frames", "-of", "csv=p=0")


def frame_count(path: Path) -> int:
    out = subprocess.run(
        [*("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"), *COUNT, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().rstrip(","))


MONO_PCM = ("-ac", "1", "-ar", "44100", "-f", "s16le", "-")


def pitch(path: Path) -> float:
    """The frequency of a pure tone, from zero crossings of the decoded mono signal."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", *MONO_PCM],
        check=True,
        capture_output=True,
    )
    samples = array.array("h", out.stdout)
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]  # away from fades and priming
    crossings = sum(1 for a, b in itertools.pairwise(middle) if (a < 0) != (b < 0))
    return crossings / 2 / (len(middle) / 44100)


def stream_duration(info: dict[str, Any], kind: str) -> float:
    (stream,) = streams(info, kind)
    return float(stream["duration"])


def approx(actual: float, expected: float, tolerance: float) -> None:
    assert abs(actual - expected) <= tolerance, f"{actual} != {expected} +- {tolerance}"


def stages(result: JobResult) -> set[str]:
    return {m["stage"] for m in result.messages if m["type"] == "progress"}


# --- running jobs -----------------------------------------------------------------------


class Session:
    """One connection for several jobs; outputs saved in their own directories."""

    def __init__(self, client: Client, tmp_path: Path) -> None:
        self.client = client
        self.tmp_path = tmp_path
        self.jobs = 0

    async def run(
        self, operation: str, path: Path, options: dict[str, Any] | None = None
    ) -> JobResult:
        self.jobs += 1
        return await self.client.run(operation, path, options, job_id=f"job-{self.jobs}")

    async def ok(
        self, operation: str, path: Path, options: dict[str, Any] | None = None
    ) -> tuple[Path, dict[str, Any], JobResult]:
        """Run a job that must complete; return its saved output, probe and messages."""
        result = await self.run(operation, path, options)
        assert result.final["type"] == "completed", result.final
        directory = self.tmp_path / f"job-{self.jobs}"
        directory.mkdir()
        output = result.save(directory)
        return output, probe(output), result

    async def refused(
        self, operation: str, path: Path, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = await self.run(operation, path, options)
        final = result.final
        assert final["type"] == "error", final
        assert final["job_id"] == f"job-{self.jobs}"
        return final


@asynccontextmanager
async def session(server: Endpoints, tmp_path: Path, seconds: float) -> AsyncIterator[Session]:
    with trio.fail_after(seconds):
        async with connect(server.url) as client:
            yield Session(client, tmp_path)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 451x300 PNG (odd width), one frame of testsrc2."""
    path = tmp_path_factory.mktemp("image") / "picture.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=451x300", "-frames:v", "1", str(path))
    return path


# --- speed ------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.25, 0.5, 2, 4, 10])
async def test_speed_changes_duration_of_video_and_audio(
    server: Endpoints, media: Media, tmp_path: Path, factor: float
) -> None:
    source = probe(media.clip)
    video_in, audio_in = stream_duration(source, "video"), stream_duration(source, "audio")
    async with session(server, tmp_path, 60) as s:
        for maintain_pitch in (True, False):
            options = {"speed_factor": factor, "maintain_pitch": maintain_pitch}
            output, info, _ = await s.ok("speed", media.clip, options)
            # Two output frames (the last frame's duration and rounding), and for the audio
            # two AAC frames of priming and padding on top of the input's own.
            (video,) = streams(info, "video")
            approx(float(video["duration"]), video_in / factor, 2 * FRAME)
            approx(stream_duration(info, "audio"), audio_in / factor, 3 * AAC_FRAME)
            approx(duration(info), max(video_in, audio_in) / factor, 2 * FRAME + 3 * AAC_FRAME)
            # Faster keeps every frame up to 60 fps; slower repeats frames at the input rate.
            rate = min(25 * factor, 60) if factor > 1 else 25
            num, den = video["r_frame_rate"].split("/")
            approx(int(num) / int(den), rate, 0.01)
            # The tone is 440 Hz: kept with maintain_pitch, shifted by the factor without.
            expected_pitch = 440 if maintain_pitch else 440 * factor
            approx(pitch(output), expected_pitch, expected_pitch * 0.03)


async def test_speed_without_audio_and_audio_only(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("speed", media.silent, {"speed_factor": 2})
        assert not streams(info, "audio")
        approx(duration(info), duration(probe(media.silent)) / 2, 2 * FRAME)

        output, info, _ = await s.ok("speed", media.tone, {"speed_factor": 0.5})
        assert not streams(info, "video")
        (audio,) = streams(info, "audio")
        assert audio["codec_name"] == "pcm_s16le"  # a WAV stays WAV
        assert output.suffix == ".wav"
        approx(duration(info), duration(probe(media.tone)) / 0.5, 2 * AAC_FRAME)
        approx(pitch(output), 440, 440 * 0.03)


# --- compress ---------------------------------------------------------------------------


async def test_compress_presets_trade_size_for_quality(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    results = {}
    async with session(server, tmp_path, 60) as s:
        for preset in ("low", "medium", "high"):
            output, info, _ = await s.ok("compress", media.clip, {"preset": preset})
            (video,) = streams(info, "video")
            assert video["codec_name"] == "h264"
            assert (video["width"], video["height"]) == (640, 360)
            assert streams(info, "audio")
            approx(duration(info), duration(probe(media.clip)), FRAME)
            reference = frame_at(media.clip, 1.0, tmp_path / f"ref-{preset}.png")
            results[preset] = (
                output.stat().st_size,
                psnr(frame_at(output, 1.0, tmp_path / f"{preset}.png"), reference),
            )
    assert results["low"][0] < results["medium"][0] < results["high"][0]
    assert results["low"][1] < results["medium"][1] < results["high"][1]


async def test_compress_honours_crf_and_bitrates(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 60) as s:
        sizes = {}
        for crf in (18, 40):
            output, _, _ = await s.ok("compress", media.clip, {"preset": "custom", "crf": crf})
            # x264 records its settings in the stream: the rate control really used.
            assert f"crf={crf}.0".encode() in output.read_bytes()
            sizes[crf] = output.stat().st_size
        assert sizes[40] < sizes[18]

        options = {"preset": "custom", "video_bitrate_kbps": 300, "audio_bitrate_kbps": 64}
        output, info, _ = await s.ok("compress", media.clip, options)
        assert b"bitrate=300" in output.read_bytes()
        (audio,) = streams(info, "audio")
        approx(int(audio["bit_rate"]), 64_000, 64_000 * 0.3)


@pytest.mark.parametrize(
    ("limits", "size"),
    [
        ({"max_width": 321}, (320, 180)),
        ({"max_height": 100}, (178, 100)),
        ({"max_width": 320, "max_height": 100}, (178, 100)),
        ({"max_width": 2000}, (640, 360)),  # never enlarges
        ({"max_width": 640, "max_height": 360}, (640, 360)),
    ],
)
async def test_compress_max_dimensions_only_shrink_and_keep_aspect(
    server: Endpoints, media: Media, tmp_path: Path, limits: dict[str, int], size: tuple[int, int]
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("compress", media.clip, {"preset": "low", **limits})
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == size


async def test_compress_odd_input_gets_even_dimensions(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("compress", media.odd, {"preset": "low"})
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == (320, 240)
    assert video["pix_fmt"] == "yuv420p"


@pytest.mark.parametrize(
    ("target", "format_name", "brand", "codecs"),
    [
        ("webm", "matroska,webm", None, ("vp9", "opus")),
        ("mkv", "matroska,webm", None, ("h264", "aac")),
        ("mov", "mov,mp4,m4a,3gp,3g2,mj2", "qt  ", ("h264", "aac")),
        ("mp4", "mov,mp4,m4a,3gp,3g2,mj2", "isom", ("h264", "aac")),
    ],
)
async def test_compress_target_format_picks_container(
    server: Endpoints,
    media: Media,
    tmp_path: Path,
    target: str,
    format_name: str,
    brand: str | None,
    codecs: tuple[str, str],
) -> None:
    async with session(server, tmp_path, 60) as s:
        output, info, _ = await s.ok(
            "compress", media.clip, {"preset": "low", "target_format": target}
        )
    assert output.suffix == f".{target}"
    assert info["format"]["format_name"] == format_name
    tags = info["format"].get("tags", {})
    if brand is not None:
        assert tags["major_brand"] == brand
    if target == "webm":
        assert b"webm" in output.read_bytes()[:64]  # the EBML DocType
    (video,), (audio,) = streams(info, "video"), streams(info, "audio")
    assert (video["codec_name"], audio["codec_name"]) == codecs
    approx(duration(info), duration(probe(media.clip)), 2 * FRAME)


async def test_compress_audio_only(server: Endpoints, media: Media, tmp_path: Path) -> None:
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok("compress", media.tone, {"preset": "low"})
        assert not streams(info, "video")
        (audio,) = streams(info, "audio")
        assert audio["codec_name"] == "aac"
        assert output.stat().st_size < media.tone.stat().st_size / 4
        approx(duration(info), duration(probe(media.tone)), 3 * AAC_FRAME)

        # A target format is honoured for audio alone too.
        output, info, _ = await s.ok("compress", media.tone, {"target_format": "webm"})
        assert output.suffix == ".webm"
        assert info["format"]["format_name"] == "matroska,webm"
        assert [a["codec_name"] for a in streams(info, "audio")] == ["opus"]
        assert not streams(info, "video")


# --- extract_audio ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [
        ("mp3", "mp3"),
        ("aac", "aac"),
        ("wav", "pcm_s16le"),
        ("opus", "opus"),
        ("m4a", "aac"),
        ("flac", "flac"),
        ("ogg", "vorbis"),
    ],
)
async def test_extract_audio_formats(
    server: Endpoints, media: Media, tmp_path: Path, fmt: str, codec: str
) -> None:
    source = probe(media.clip)
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok("extract_audio", media.clip, {"format": fmt})
    assert output.suffix == f".{fmt}"
    assert not streams(info, "video")
    (audio,) = streams(info, "audio")
    assert audio["codec_name"] == codec
    assert audio["channels"] == 2
    # A frame of priming/padding for lossy codecs (Opus: 20 ms frames, 6.5 ms pre-skip).
    approx(duration(info), stream_duration(source, "audio"), 3 * AAC_FRAME)
    approx(pitch(output), 440, 440 * 0.03)


@pytest.mark.parametrize("fmt", ["mp3", "aac", "ogg"])
async def test_extract_audio_bitrate(
    server: Endpoints, media: Media, tmp_path: Path, fmt: str
) -> None:
    rates = {}
    async with session(server, tmp_path, 30) as s:
        for kbps in (64, 192):
            output, info, _ = await s.ok(
                "extract_audio", media.long, {"format": fmt, "bitrate_kbps": kbps}
            )
            rates[kbps] = output.stat().st_size * 8 / duration(info) / 1000
    # A pure tone is easy to code, so ABR encoders undershoot high targets; the average
    # rate must still follow the request and never exceed it by much.
    assert rates[64] <= 64 * 1.3
    assert rates[192] > rates[64] * 1.5
    if fmt == "mp3":  # CBR: exact, up to container overhead
        approx(rates[64], 64, 64 * 0.1)
        approx(rates[192], 192, 192 * 0.1)


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 22050), ("wav", 8000), ("flac", 48000)])
async def test_extract_audio_sample_rate(
    server: Endpoints, media: Media, tmp_path: Path, fmt: str, rate: int
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("extract_audio", media.clip, {"format": fmt, "sample_rate": rate})
    (audio,) = streams(info, "audio")
    assert int(audio["sample_rate"]) == rate


async def test_extract_audio_without_audio_is_refused(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        error = await s.refused("extract_audio", media.silent, {"format": "mp3"})
        assert error["code"] == "NO_AUDIO_STREAM"
        assert "ffmpeg" not in error["message"].lower()
        # The connection carries on.
        _, info, _ = await s.ok("extract_audio", media.clip, {"format": "mp3"})
        assert streams(info, "audio")


# --- remove_audio -----------------------------------------------------------------------


async def test_remove_audio(server: Endpoints, media: Media, tmp_path: Path) -> None:
    source = probe(media.clip)
    (video_in,) = streams(source, "video")
    async with session(server, tmp_path, 30) as s:
        output, info, result = await s.ok("remove_audio", media.clip)
        assert not streams(info, "audio")
        (video,) = streams(info, "video")
        assert video["codec_name"] == "h264"
        assert video["bit_rate"] == video_in["bit_rate"]
        assert packet_hash(output) == packet_hash(media.clip)  # the very same packets
        approx(duration(info), stream_duration(source, "video"), FRAME / 2)
        assert any("stream copy" in stage for stage in stages(result))

        output, info, result = await s.ok("remove_audio", media.odd, {"keep_video_quality": False})
        assert not streams(info, "audio")
        (video,) = streams(info, "video")
        assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
        assert (video["width"], video["height"]) == (320, 240)
        assert packet_hash(output) != packet_hash(media.odd)
        approx(duration(info), stream_duration(probe(media.odd), "video"), 1 / 30)
        assert any("re-encoding" in stage for stage in stages(result))

        error = await s.refused("remove_audio", media.tone)
        assert error["code"] == "NO_VIDEO_STREAM"


# --- convert ----------------------------------------------------------------------------

CONVERT_TARGETS = {
    # target: (probed format_name, codecs when re-encoded by default)
    "mkv": ("matroska,webm", ("h264", "aac")),
    "webm": ("matroska,webm", ("vp9", "opus")),
    "mov": ("mov,mp4,m4a,3gp,3g2,mj2", ("h264", "aac")),
    "avi": ("avi", ("h264", "mp3")),
    "ts": ("mpegts", ("h264", "aac")),
}
# AVI cannot mark the MP3 encoder's delay (1105 samples) as not to be played, nor the
# padding of its last 1152-sample frame.
MP3_IN_AVI = (1105 + 1152) / 44100


@pytest.mark.parametrize("target", list(CONVERT_TARGETS))
async def test_convert_containers(
    server: Endpoints, media: Media, tmp_path: Path, target: str
) -> None:
    format_name, codecs = CONVERT_TARGETS[target]
    source_duration = duration(probe(media.clip))
    async with session(server, tmp_path, 60) as s:
        for stream_copy in (False, True):
            options = {"target_format": target, "stream_copy": stream_copy}
            output, info, result = await s.ok("convert", media.clip, options)
            assert output.suffix == f".{target}"
            assert info["format"]["format_name"] == format_name
            (video,), (audio,) = streams(info, "video"), streams(info, "audio")
            slack = 2 * FRAME + 2 * AAC_FRAME + (MP3_IN_AVI if target == "avi" else 0)
            approx(duration(info), source_duration, slack)
            if not stream_copy:
                assert (video["codec_name"], audio["codec_name"]) == codecs
                assert packet_hash(output) != packet_hash(media.clip)
            elif target == "webm":
                # WebM cannot hold H.264/AAC: re-encoded, and the progress stage says why.
                assert (video["codec_name"], audio["codec_name"]) == codecs
                assert any("re-encoding" in st and "h264" in st for st in stages(result))
            elif target == "avi":
                # The video is copied; AAC does not go in AVI, so the audio is re-encoded.
                assert (video["codec_name"], audio["codec_name"]) == ("h264", "mp3")
                (note,) = [st for st in stages(result) if "re-encoding" in st]
                assert "audio aac" in note
                assert "video" not in note
            else:
                assert (video["codec_name"], audio["codec_name"]) == ("h264", "aac")
                assert "re-encoding" not in " ".join(stages(result))
                if target in ("mkv", "mov"):  # same packets (AVI and TS take Annex B)
                    assert packet_hash(output) == packet_hash(media.clip)
                    assert packet_hash(output, "a:0") == packet_hash(media.clip, "a:0")


@pytest.mark.parametrize(
    ("options", "codecs"),
    [
        ({"target_format": "mkv", "video_codec": "vp9", "audio_codec": "flac"}, ("vp9", "flac")),
        ({"target_format": "mp4", "video_codec": "hevc", "audio_codec": "mp3"}, ("hevc", "mp3")),
        (
            {"target_format": "mov", "video_codec": "mpeg4", "audio_codec": "pcm"},
            ("mpeg4", "pcm_s16le"),
        ),
        ({"target_format": "ogv"}, ("theora", "vorbis")),
        (
            {"target_format": "mkv", "stream_copy": True, "audio_codec": "opus"},
            ("h264", "opus"),
        ),
    ],
)
async def test_convert_explicit_codecs(
    server: Endpoints,
    media: Media,
    tmp_path: Path,
    options: dict[str, Any],
    codecs: tuple[str, str],
) -> None:
    async with session(server, tmp_path, 60) as s:
        _, info, _ = await s.ok("convert", media.clip, options)
    (video,), (audio,) = streams(info, "video"), streams(info, "audio")
    assert (video["codec_name"], audio["codec_name"]) == codecs
    approx(duration(info), duration(probe(media.clip)), 2 * FRAME + 2 * AAC_FRAME)


async def test_convert_stream_copy_naming_the_input_codec_still_copies(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    options = {"target_format": "mkv", "stream_copy": True, "video_codec": "h264"}
    async with session(server, tmp_path, 30) as s:
        output, _, _ = await s.ok("convert", media.clip, {**options, "audio_codec": "aac"})
    assert packet_hash(output) == packet_hash(media.clip)
    assert packet_hash(output, "a:0") == packet_hash(media.clip, "a:0")


async def test_convert_to_audio_formats_and_refusals(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("convert", media.clip, {"target_format": "mp3"})
        assert not streams(info, "video")
        assert [a["codec_name"] for a in streams(info, "audio")] == ["mp3"]

        _, info, _ = await s.ok("convert", media.tone, {"target_format": "flac"})
        assert [a["codec_name"] for a in streams(info, "audio")] == ["flac"]

        for options, field in (
            ({"target_format": "webm", "video_codec": "h264"}, "video_codec"),
            ({"target_format": "avi", "audio_codec": "opus"}, "audio_codec"),
            ({"target_format": "mp4", "video_codec": "theora"}, "video_codec"),
        ):
            error = await s.refused("convert", media.clip, options)
            assert error["code"] == "VALIDATION_ERROR"
            assert error["details"]["field"] == f"$.options.{field}"

        error = await s.refused("convert", media.silent, {"target_format": "mp3"})
        assert error["code"] == "NO_AUDIO_STREAM"


# --- thumbnail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "codec", "box", "size"),
    [
        ("png", "png", {}, (640, 360)),
        ("jpeg", "mjpeg", {"width": 320}, (320, 180)),
        ("jpg", "mjpeg", {"height": 90}, (160, 90)),
        ("png", "png", {"width": 320, "height": 320}, (320, 180)),  # fits inside the box
        ("png", "png", {"width": 1280, "height": 100}, (178, 100)),
    ],
)
async def test_thumbnail_format_and_size(
    server: Endpoints,
    media: Media,
    tmp_path: Path,
    fmt: str,
    codec: str,
    box: dict[str, int],
    size: tuple[int, int],
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("thumbnail", media.clip, {"timestamp": 1.0, "format": fmt, **box})
    (video,) = streams(info, "video")
    assert video["codec_name"] == codec
    assert (video["width"], video["height"]) == size


async def test_thumbnail_is_the_frame_at_the_timestamp(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        output, _, _ = await s.ok("thumbnail", media.clip, {"timestamp": 1.3, "format": "png"})
        # testsrc2 moves every frame: the same frame is identical, a nearby one is not.
        same = psnr(output, frame_at(media.clip, 1.3, tmp_path / "at.png"))
        other = psnr(output, frame_at(media.clip, 1.2, tmp_path / "before.png"))
        assert same > 60 > other

        # The very end is allowed and gives the last frame.
        output, _, _ = await s.ok("thumbnail", media.clip, {"timestamp": 2.0, "format": "png"})
        last = frame_at(media.clip, 2.0 - FRAME, tmp_path / "last.png")
        assert psnr(output, last) > 60

        error = await s.refused("thumbnail", media.clip, {"timestamp": 5.0})
        assert error["code"] == "OUT_OF_RANGE"
        error = await s.refused("thumbnail", media.tone, {"timestamp": 1.0})
        assert error["code"] == "NO_VIDEO_STREAM"


# --- trim -------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (0.52, 1.32), (1.0, 2.0)])
async def test_trim_is_frame_accurate(
    server: Endpoints, media: Media, tmp_path: Path, start: float, end: float
) -> None:
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok("trim", media.clip, {"start_time": start, "end_time": end})
    (video,) = streams(info, "video")
    approx(float(video["duration"]), end - start, FRAME)
    approx(duration(info), end - start, FRAME)
    assert streams(info, "audio")
    approx(stream_duration(info, "audio"), end - start, FRAME)
    # The first frame is the input's frame at `start`, even off a keyframe (GOP is 2 s).
    first = frame_at(output, 0, tmp_path / "first.png")
    wanted = psnr(first, frame_at(media.clip, start, tmp_path / "wanted.png"))
    neighbour = psnr(first, frame_at(media.clip, start + FRAME, tmp_path / "next.png"))
    assert wanted > neighbour


async def test_trim_range_checks(server: Endpoints, media: Media, tmp_path: Path) -> None:
    length = duration(probe(media.clip))
    async with session(server, tmp_path, 30) as s:
        error = await s.refused("trim", media.clip, {"start_time": 0.5, "end_time": length + 3})
        assert error["code"] == "OUT_OF_RANGE"
        assert error["details"]["field"] == "$.options.end_time"
        error = await s.refused("trim", media.clip, {"start_time": length + 1, "end_time": 9})
        assert error["code"] == "OUT_OF_RANGE"

        # A hair past the end is rounding: clamped to the end.
        options = {"start_time": 1.5, "end_time": length + 0.04}
        _, info, _ = await s.ok("trim", media.clip, options)
        approx(duration(info), length - 1.5, FRAME)

        output, info, _ = await s.ok("trim", media.tone, {"start_time": 1, "end_time": 2.5})
        assert output.suffix == ".wav"
        approx(duration(info), 1.5, 0.001)


# --- gif --------------------------------------------------------------------------------


async def test_gif_options(server: Endpoints, media: Media, tmp_path: Path) -> None:
    async with session(server, tmp_path, 60) as s:
        options = {"start_time": 0.5, "duration": 1.0, "fps": 10, "width": 200}
        output, info, _ = await s.ok("gif", media.clip, options)
        (video,) = streams(info, "video")
        assert info["format"]["format_name"] == "gif"
        assert video["width"] == 200
        approx(video["height"], 360 * 200 / 640, 1)
        approx(frame_count(output), 10, 1)
        approx(duration(info), 1.0, 0.1)
        # It starts at start_time: its first frame is the input's at 0.5 s, not at 0.
        scale = f"scale={video['width']}:{video['height']}"
        first = frame_at(output, 0, tmp_path / "first.png")
        at = psnr(first, frame_at(media.clip, 0.5, tmp_path / "at.png", scale))
        at_zero = psnr(first, frame_at(media.clip, 0.0, tmp_path / "zero.png", scale))
        assert at > at_zero

        output, info, _ = await s.ok("gif", media.clip, {"duration": 1.0, "fps": 20, "width": 96})
        assert streams(info, "video")[0]["width"] == 96
        approx(frame_count(output), 20, 1)

        # The duration runs to the input's end and no further.
        output, info, _ = await s.ok("gif", media.clip, {"start_time": 1.5, "duration": 10})
        approx(duration(info), duration(probe(media.clip)) - 1.5, 0.1)

        error = await s.refused("gif", media.clip, {"start_time": 9})
        assert error["code"] == "OUT_OF_RANGE"
        error = await s.refused("gif", media.tone)
        assert error["code"] == "NO_VIDEO_STREAM"


async def test_gif_optimize_uses_a_palette_of_the_clip(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    quality = {}
    async with session(server, tmp_path, 60) as s:
        for optimize in (True, False):
            options = {"duration": 1.0, "fps": 10, "width": 160, "optimize": optimize}
            output, info, _ = await s.ok("gif", media.clip, options)
            (video,) = streams(info, "video")
            assert (video["width"], video["height"]) == (160, 90)
            approx(frame_count(output), 10, 1)
            reference = frame_at(media.clip, 0, tmp_path / f"ref-{optimize}.png", "scale=160:90")
            quality[optimize] = psnr(frame_at(output, 0, tmp_path / f"{optimize}.png"), reference)
    # A palette made from the clip beats the generic 256-colour one (by about 1 dB here:
    # testsrc2 is made of a few flat colours that the generic palette nearly has).
    assert quality[True] > quality[False]


# --- filter -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "size"),
    [
        ([{"type": "scale", "width": 320}], (320, 180)),
        ([{"type": "scale", "height": 90}], (160, 90)),
        ([{"type": "scale", "width": 300, "height": 300}], (300, 300)),
        ([{"type": "rotate", "angle": 180}], (640, 360)),
        ([{"type": "rotate", "angle": 30}], None),
        ([{"type": "crop", "width": 320, "height": 180, "x": 100, "y": 50}], (320, 180)),
        ([{"type": "crop", "width": 101, "height": 99}], (100, 98)),  # 4:2:0 needs even
        (
            [{"type": "scale", "width": 320}, {"type": "rotate", "angle": 90}],
            (180, 320),
        ),
    ],
)
async def test_filter_geometry(
    server: Endpoints,
    media: Media,
    tmp_path: Path,
    filters: list[dict[str, Any]],
    size: tuple[int, int] | None,
) -> None:
    async with session(server, tmp_path, 30) as s:
        _, info, _ = await s.ok("filter", media.clip, {"filters": filters})
    (video,) = streams(info, "video")
    if size is None:  # rotate 30: the canvas grows to hold the whole turned frame
        angle = math.radians(30)
        size = (
            round(640 * math.cos(angle) + 360 * math.sin(angle)),
            round(640 * math.sin(angle) + 360 * math.cos(angle)),
        )
        approx(video["width"], size[0], 2)
        approx(video["height"], size[1], 2)
    else:
        assert (video["width"], video["height"]) == size
    assert streams(info, "audio")
    approx(duration(info), duration(probe(media.clip)), 2 * FRAME)


@pytest.mark.parametrize(("angle", "transpose"), [(90, "clock"), (270, "cclock"), (-90, "cclock")])
async def test_filter_rotate_quarter_turns_are_exact(
    server: Endpoints, media: Media, tmp_path: Path, angle: int, transpose: str
) -> None:
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok(
            "filter", media.clip, {"filters": [{"type": "rotate", "angle": angle}]}
        )
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == (360, 640)  # swapped, no borders
    frame = frame_at(output, 1.0, tmp_path / "frame.png")
    other = "cclock" if transpose == "clock" else "clock"
    right = psnr(frame, frame_at(media.clip, 1.0, tmp_path / "right.png", f"transpose={transpose}"))
    wrong = psnr(frame, frame_at(media.clip, 1.0, tmp_path / "wrong.png", f"transpose={other}"))
    assert right > 35 > wrong


async def test_filter_fps_and_refusals(server: Endpoints, media: Media, tmp_path: Path) -> None:
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok(
            "filter", media.clip, {"filters": [{"type": "fps", "fps": 10}]}
        )
        (video,) = streams(info, "video")
        assert video["r_frame_rate"] == "10/1"
        approx(frame_count(output), 10 * duration(probe(media.clip)), 1)

        crop = {"type": "crop", "width": 600, "height": 300, "x": 100, "y": 100}
        error = await s.refused("filter", media.clip, {"filters": [crop]})
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == "$.options.filters[0]"

        error = await s.refused(
            "filter", media.silent, {"filters": [{"type": "volume", "volume": 2}]}
        )
        assert error["code"] == "NO_AUDIO_STREAM"
        error = await s.refused("filter", media.tone, {"filters": [{"type": "scale", "width": 64}]})
        assert error["code"] == "NO_VIDEO_STREAM"


@pytest.mark.parametrize("factor", [0.1, 0.5, 2.0])
async def test_filter_volume(
    server: Endpoints, media: Media, tmp_path: Path, factor: float
) -> None:
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok(
            "filter", media.clip, {"filters": [{"type": "volume", "volume": factor}]}
        )
        (audio,) = streams(info, "audio")
        assert int(audio["sample_rate"]) == 44100
        # Video untouched by an audio-only chain.
        assert packet_hash(output) == packet_hash(media.clip)
    approx(mean_volume(output) - mean_volume(media.clip), 20 * math.log10(factor), 1.0)


@pytest.mark.parametrize(("path_name", "target"), [("long", -23.0), ("tone", -16.0)])
async def test_filter_normalize_reaches_target_loudness(
    server: Endpoints, media: Media, tmp_path: Path, path_name: str, target: float
) -> None:
    source = getattr(media, path_name)
    rate = int(streams(probe(source), "audio")[0]["sample_rate"])
    async with session(server, tmp_path, 30) as s:
        options = {"filters": [{"type": "normalize", "target_lufs": target}]}
        output, info, _ = await s.ok("filter", source, options)
    (audio,) = streams(info, "audio")
    assert int(audio["sample_rate"]) == rate  # loudnorm works at 192 kHz; not the output
    approx(integrated_loudness(output), target, 1.5)
    approx(duration(info), duration(probe(source)), 3 * AAC_FRAME)


async def test_filter_chain_of_video_and_audio(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    filters = [
        {"type": "crop", "width": 320, "height": 320, "x": 160, "y": 20},
        {"type": "scale", "width": 160},
        {"type": "rotate", "angle": 90},
        {"type": "fps", "fps": 12.5},
        {"type": "volume", "volume": 0.5},
    ]
    async with session(server, tmp_path, 30) as s:
        output, info, _ = await s.ok("filter", media.clip, {"filters": filters})
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == (160, 160)
    assert video["r_frame_rate"] == "25/2"
    approx(mean_volume(output) - mean_volume(media.clip), -6.02, 1.0)


async def test_filter_on_an_image(
    server: Endpoints, media: Media, image: Path, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 30) as s:
        filters = [{"type": "scale", "width": 200}]
        output, info, _ = await s.ok("filter", image, {"filters": filters})
        assert output.suffix == ".png"
        (video,) = streams(info, "video")
        assert video["codec_name"] == "png"
        approx(video["height"], 300 * 200 / 451, 2)
        assert video["width"] == 200

        filters = [{"type": "rotate", "angle": 90}, {"type": "crop", "width": 100, "height": 50}]
        _, info, _ = await s.ok("filter", image, {"filters": filters})
        assert (streams(info, "video")[0]["width"], streams(info, "video")[0]["height"]) == (
            100,
            50,
        )

        error = await s.refused("filter", image, {"filters": [{"type": "fps", "fps": 5}]})
        assert error["code"] == "UNSUPPORTED_MEDIA"


# --- progress ---------------------------------------------------------------------------


async def test_progress_rises_to_100_at_a_bounded_rate(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    async with session(server, tmp_path, 60) as s:
        began = trio.current_time()
        _, info, result = await s.ok("speed", media.long, {"speed_factor": 0.25})
        elapsed = trio.current_time() - began
    percentages = result.progress
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100
    assert 0 <= percentages[0] < 100
    assert all(0 <= p <= 100 for p in percentages)
    # Throttled: a handful per second at most (plus the queued/started/finished markers).
    assert len(percentages) <= 4 * elapsed + 4
    assert streams(info, "video")
