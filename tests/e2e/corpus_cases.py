"""The operations the corpus suites run on every file, and what each output must show.

What a file holds is read from ffprobe here, independently of the service's own probe.
Each case either completes with an output whose probe shows what the operation means, or
is refused with the specific code for why it cannot apply (no video, no audio, a still
image). Shared by the third-party corpus (test_corpus) and the generated one
(test_odd_corpus).
"""

from __future__ import annotations

import functools
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.helpers import connect, duration, mean_volume, packet_hash, probe, streams

NO_VIDEO = "NO_VIDEO_STREAM"
NO_AUDIO = "NO_AUDIO_STREAM"
UNSUPPORTED = "UNSUPPORTED_MEDIA"
OUT_OF_RANGE = "OUT_OF_RANGE"
SILENCE_DB = -91.0  # volumedetect's floor for 16-bit digital silence


@attrs.frozen
class Facts:
    """What ffprobe says a corpus file holds, its duration measured from its packets."""

    path: Path
    duration: float | None
    video: dict[str, Any] | None  # first real video stream (cover art excluded)
    audio: dict[str, Any] | None
    image: bool
    # An edit list hides more than two frames of the video: a stream copy into Matroska
    # would show them, so the service re-encodes it.
    hidden_video: bool = False

    @property
    def timeline(self) -> bool:
        """Audio or video that lasts: something speed, trim, convert... can work on."""
        return (
            self.duration is not None
            and not self.image
            and (self.video is not None or self.audio is not None)
        )

    @property
    def fps(self) -> float:
        assert self.video is not None
        return frame_rate(self.video)

    @property
    def coded_size(self) -> tuple[int, int]:
        assert self.video is not None
        return int(self.video["width"]), int(self.video["height"])

    @property
    def size(self) -> tuple[int, int]:
        """The size shown: the coded size turned by the display matrix's rotation."""
        assert self.video is not None
        w, h = self.coded_size
        sides = self.video.get("side_data_list") or ()
        rotation = next((int(s["rotation"]) for s in sides if "rotation" in s), 0)
        return (h, w) if abs(rotation) % 180 == 90 else (w, h)

    @property
    def slack(self) -> float:
        """How far an output's duration may honestly differ from the ideal: two video
        frames, and two audio frames (AAC 1024, MP3 1152 samples) plus encoder priming."""
        slack = 0.0
        if self.video is not None and not self.image:
            slack += 2 / self.fps
        if self.audio is not None:
            slack += 3 * 1152 / int(self.audio["sample_rate"])
        return slack


def frame_rate(video: dict[str, Any]) -> float:
    num, _, den = video["avg_frame_rate"].partition("/")
    return float(num) / float(den or 1) if float(num) else 25.0


@functools.cache
def facts(path: Path) -> Facts:
    info = probe(path)
    video = next(iter(streams(info, "video")), None)
    audio = next(iter(streams(info, "audio")), None)
    raw = info["format"].get("duration")
    image = info["format"]["format_name"].endswith("_pipe")
    if image:
        stated = float(raw) if raw not in (None, "N/A") else None
        return Facts(path=path, duration=stated, video=video, audio=audio, image=image)
    shown, hidden = packets(path)
    # Not the container's stated duration: Matroska and MP4 state where the last packet
    # ends counted from 0, which is not how long a file starting at 5 s or at -1 s lasts.
    # The packets say, independently of the service's reading.
    span = max(end for _, _, end in shown) - min(start for _, start, _ in shown) if shown else None
    hidden_video = video is not None and (
        sum(end - start for index, start, end in hidden if index == video["index"])
        > 2 / frame_rate(video)
    )
    return Facts(
        path=path, duration=span, video=video, audio=audio, image=image, hidden_video=hidden_video
    )


Packet = tuple[int, float, float]  # stream index, start, end (s)


def packets(path: Path) -> tuple[list[Packet], list[Packet]]:
    """The file's packets with a timestamp: those that play, and those an edit list
    discards (flag D), which FFmpeg decodes only to drop."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-show_entries"),
            "packet=stream_index,pts_time,duration_time,flags",
            *("-of", "csv=p=0", str(path)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    shown: list[Packet] = []
    hidden: list[Packet] = []
    for line in out.split():
        index, pts, length, flags = [*line.split(","), "", "", ""][:4]
        if pts in ("", "N/A"):
            continue
        start = float(pts)
        end = start + float(length if length not in ("", "N/A") else 0)
        (hidden if "D" in flags else shown).append((int(index), start, end))
    return shown, hidden


@attrs.frozen
class Case:
    """One operation as the corpus suite runs it."""

    operation: str
    options: Callable[[Facts], dict[str, Any]]
    refusal: Callable[[Facts], str | None]  # the error code expected, None if it applies
    check: Callable[[Facts, Path, dict[str, Any]], None]


async def run_case(url: str, spec: Case, path: Path, out_dir: Path) -> None:
    """`spec` on the file at `path` through the server at `url`: refused with the code the
    file calls for, or completed with outputs (saved in `out_dir`) that pass its check."""
    f = facts(path)
    with trio.fail_after(60):
        async with connect(url) as client:
            result = await client.run(spec.operation, path, spec.options(f))
    final = result.final
    refusal = spec.refusal(f)
    if refusal is not None:
        assert final["type"] == "error", final
        assert final["code"] == refusal, final
        return
    assert final["type"] == "completed", final
    saved = result.save(out_dir)
    spec.check(f, saved, probe(saved))


def needs_timeline(f: Facts) -> str | None:
    return None if f.timeline else UNSUPPORTED


def needs_start_at_0_3(f: Facts) -> str | None:
    """trim from 0.3 s: a clip that ends before is out of range."""
    if f.timeline and f.duration is not None and f.duration <= 0.3:
        return OUT_OF_RANGE
    return needs_timeline(f)


def needs_moving_video(f: Facts) -> str | None:
    if f.video is None:
        return NO_VIDEO
    return UNSUPPORTED if f.image else None


def needs_video(f: Facts) -> str | None:
    return None if f.video is not None else NO_VIDEO


def needs_audio(f: Facts) -> str | None:
    return None if f.audio is not None else NO_AUDIO


def approx(actual: float, expected: float, slack: float) -> None:
    assert math.isclose(actual, expected, abs_tol=slack), f"{actual} != {expected} +- {slack}"


def same_kinds(f: Facts, info: dict[str, Any], *, audio: bool | None = None) -> None:
    """Output has video iff the input has (non-image) video, audio iff the input has audio."""
    assert bool(streams(info, "video")) == (f.video is not None)
    has_audio = f.audio is not None if audio is None else audio
    assert bool(streams(info, "audio")) == has_audio


def check_speed(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    same_kinds(f, info)
    approx(duration(info), f.duration / 2, f.slack)


def check_compress(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    same_kinds(f, info)
    approx(duration(info), f.duration, f.slack)
    if f.video is not None:
        (video,) = streams(info, "video")
        w, h = f.size
        expected = (320, round(h * 320 / w) // 2 * 2) if w > 320 else (w // 2 * 2, h // 2 * 2)
        assert (video["width"], video["height"]) == expected
        assert video["codec_name"] == "h264"


def check_extract_audio(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    assert not streams(info, "video")
    (audio,) = streams(info, "audio")
    assert audio["codec_name"] == "mp3"
    approx(duration(info), f.duration, f.slack)


def check_remove_audio(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    assert not streams(info, "audio")
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == f.coded_size  # rotation stays metadata
    approx(duration(info), f.duration, f.slack)
    # keep_video_quality (the default): the video's packets are copied untouched.
    assert packet_hash(path) == packet_hash(f.path)


def check_convert_mp4(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    assert "mp4" in info["format"]["format_name"]
    same_kinds(f, info)
    for s in streams(info, "video"):
        assert s["codec_name"] == "h264"
    for s in streams(info, "audio"):
        assert s["codec_name"] == "aac"
    approx(duration(info), f.duration, f.slack)


def check_convert_mkv_copy(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    assert info["format"]["format_name"].startswith("matroska")
    same_kinds(f, info)
    if f.video is not None:
        (video,) = streams(info, "video")
        assert video["codec_name"] == f.video["codec_name"]  # mkv holds every corpus codec
        # Copied untouched, unless what the edit list hides would show.
        assert (packet_hash(path) == packet_hash(f.path)) is not f.hidden_video
    approx(duration(info), f.duration, f.slack)


def check_thumbnail(f: Facts, path: Path, info: dict[str, Any]) -> None:
    (video,) = streams(info, "video")
    assert video["codec_name"] == "mjpeg"
    w, h = f.size
    assert video["width"] == 160
    assert abs(video["height"] - h * 160 / w) <= 2


def check_trim(f: Facts, path: Path, info: dict[str, Any]) -> None:
    same_kinds(f, info)
    approx(duration(info), 0.7, f.slack)


def check_gif(f: Facts, path: Path, info: dict[str, Any]) -> None:
    (video,) = streams(info, "video")
    assert info["format"]["format_name"] == "gif"
    assert video["width"] == 120
    w, h = f.size
    assert abs(video["height"] - h * 120 / w) <= 1
    # The clip asked for (1 s at 10 fps), or the whole input if shorter, but at least
    # one GIF frame (0.1 s): a 1-frame video gives a 1-frame GIF.
    assert f.duration is not None
    approx(duration(info), max(min(1.0, f.duration), 0.1), 0.2)


def check_filter_scale(f: Facts, path: Path, info: dict[str, Any]) -> None:
    (video,) = streams(info, "video")
    w, h = f.size
    assert video["width"] == 160
    assert abs(video["height"] - h * 160 / w) <= 2
    if not f.image:
        assert f.duration is not None
        same_kinds(f, info)
        approx(duration(info), f.duration, f.slack)


def check_filter_volume(f: Facts, path: Path, info: dict[str, Any]) -> None:
    assert f.duration is not None
    same_kinds(f, info)
    approx(duration(info), f.duration, f.slack)
    before, after = mean_volume(f.path), mean_volume(path)
    if before > SILENCE_DB + 10:
        # volume 0.5 is -6.02 dB; lossy re-encoding moves the mean by a fraction of a dB.
        approx(after - before, -6.02, 1.0)
    else:  # a silent track (h264_aac_720p_1s.mp4) stays silent
        assert after <= SILENCE_DB + 1


CASES = {
    "speed": Case("speed", lambda f: {"speed_factor": 2}, needs_timeline, check_speed),
    "compress": Case(
        "compress", lambda f: {"preset": "low", "max_width": 320}, needs_timeline, check_compress
    ),
    "extract_audio": Case(
        "extract_audio", lambda f: {"format": "mp3"}, needs_audio, check_extract_audio
    ),
    "remove_audio": Case("remove_audio", lambda f: {}, needs_moving_video, check_remove_audio),
    "convert_mp4": Case(
        "convert", lambda f: {"target_format": "mp4"}, needs_timeline, check_convert_mp4
    ),
    "convert_mkv_copy": Case(
        "convert",
        lambda f: {"target_format": "mkv", "stream_copy": True},
        needs_timeline,
        check_convert_mkv_copy,
    ),
    "thumbnail": Case("thumbnail", lambda f: {"width": 160}, needs_video, check_thumbnail),
    "trim": Case(
        "trim", lambda f: {"start_time": 0.3, "end_time": 1.0}, needs_start_at_0_3, check_trim
    ),
    "gif": Case(
        "gif", lambda f: {"duration": 1, "width": 120, "fps": 10}, needs_moving_video, check_gif
    ),
    "filter_scale": Case(
        "filter",
        lambda f: {"filters": [{"type": "scale", "width": 160}]},
        needs_video,
        check_filter_scale,
    ),
    "filter_volume": Case(
        "filter",
        lambda f: {"filters": [{"type": "volume", "volume": 0.5}]},
        needs_audio,
        check_filter_volume,
    ),
}
