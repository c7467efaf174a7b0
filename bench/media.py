"""Test media made with lavfi at the start of a run, so the bench needs no files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs


@attrs.frozen
class Media:
    small: Path  # 2 s 640x360 @ 25 fps, H.264 + AAC stereo
    long: Path  # 10 s 1280x720 @ 25 fps, H.264 + AAC stereo (length adjustable)
    big: Path  # uncompressed WAV of about `upload_mb` MiB, for the large-upload scenario


def clip(path: Path, size: str, seconds: float, *, ffmpeg: str = "ffmpeg") -> Path:
    """An H.264 + AAC MP4 test pattern with a tone."""
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25:duration={seconds:g}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds:g}:sample_rate=44100",
            "-ac",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "50",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def wav(path: Path, mib: float, *, ffmpeg: str = "ffmpeg") -> Path:
    """A 48 kHz stereo 16-bit WAV of about `mib` MiB (192,000 bytes per second)."""
    seconds = max(1.0, mib * 1024 * 1024 / 192_000)
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds:.3f}:sample_rate=48000",
            "-ac",
            "2",
            "-c:a",
            "pcm_s16le",
            str(path),
        ],
        check=True,
        timeout=300,
    )
    return path


def high_bitrate_video(path: Path, mib: float, *, ffmpeg: str = "ffmpeg") -> Path:
    """A Matroska file of about `mib` MiB that FFmpeg stream-copies into MKV: intra-only
    MPEG-2 at the highest quality, of a noisy 1280x720 test pattern (about 19 MB a second).

    One second is encoded, then looped by stream copy up to the size (`-fs`), so a 500 MiB
    file takes a few seconds to make, not minutes of encoding.
    """
    segment = path.with_name(path.stem + ".segment.mkv")
    common = [ffmpeg, "-v", "error", "-y"]
    try:
        subprocess.run(
            [
                *common,
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=25:duration=1,noise=alls=60:allf=t+u",
                "-c:v",
                "mpeg2video",
                "-q:v",
                "1",
                "-g",
                "1",
                str(segment),
            ],
            check=True,
            timeout=120,
        )
        subprocess.run(
            [
                *common,
                "-stream_loop",
                "-1",
                "-i",
                str(segment),
                "-c",
                "copy",
                "-fs",
                str(int(mib * 1024 * 1024)),
                str(path),
            ],
            check=True,
            timeout=300,
        )
    finally:
        segment.unlink(missing_ok=True)
    return path


def generate(
    directory: Path, *, long_seconds: float = 10.0, upload_mb: float = 200.0, ffmpeg: str = "ffmpeg"
) -> Media:
    """Make the bench's media in `directory` (blocking: run it in a thread)."""
    directory.mkdir(parents=True, exist_ok=True)
    return Media(
        small=clip(directory / "small_640x360_2s.mp4", "640x360", 2.0, ffmpeg=ffmpeg),
        long=clip(
            directory / f"long_1280x720_{long_seconds:g}s.mp4",
            "1280x720",
            long_seconds,
            ffmpeg=ffmpeg,
        ),
        big=wav(directory / f"big_{upload_mb:g}MiB.wav", upload_mb, ffmpeg=ffmpeg),
    )


def tone(path: Path, seconds: float, *, ffmpeg: str = "ffmpeg") -> Path:
    """A mono 44.1 kHz sine as FLAC: small to upload, ~88 KB a second once extracted to WAV."""
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds:g}:sample_rate=44100",
            "-ac",
            "1",
            "-c:a",
            "flac",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path
