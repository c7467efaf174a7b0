"""Odd media made with FFmpeg's own sources: the files of issue 13, item 3.

Each file is 1-2 s and a few hundred KB at most, and odd in one way users' files are:
no seek index, program streams without timestamps, attachments, timestamps that do not
start at 0 or start below it, edit lists, rotation, high bit depth and 4:4:4, HEVC, AV1,
VP9, PCM in MOV, mono and 7.1 audio, audio alone in MP4, cover pictures, a single frame.

    python -m tests.oddmedia DIR      # (re)build them all into DIR

Tests call `build(cache_dir)`: a file is made once per recipe and FFmpeg version (the
directory's name is a hash of both) and reused after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
VIDEO = ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2")
TONE = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2")
# A one-frame picture (25 fps source, 0.04 s) for cover art.
PICTURE = ("-f", "lavfi", "-i", "color=c=red:size=160x120:duration=0.04")
# One keyframe in 2 s: a seek anywhere has to decode from the start.
H264 = ("-c:v", "libx264", "-preset", "veryfast", "-g", "50")
AAC = ("-c:a", "aac", "-b:a", "64k")
# Both sources shifted back a second, and the muxer told to keep the negative timestamps.
FROM_MINUS_1S = (
    ("-itsoffset", "-1"),
    VIDEO,
    ("-itsoffset", "-1"),
    TONE,
    H264,
    AAC,
    ("-avoid_negative_ts", "disabled"),
)
AV1_ENCODERS = ("libsvtav1", "libaom-av1", "librav1e")
# Fonts a Debian machine is likely to have (fonts-dejavu-core comes with many packages).
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts")
# SVT-AV1 prints its configuration to stderr unless told to keep to errors.
QUIET = {**os.environ, "SVT_LOG": "1"}


@attrs.frozen
class Recipe:
    """One file: FFmpeg arguments between the global options and the output.

    `{source}` in `args` is the path of the recipe named `source`, `{font}` a TrueType
    font, `{av1}` the first AV1 encoder this FFmpeg has.
    """

    name: str
    odd: str  # what is odd about it, for a reader of a failing test
    args: tuple[str, ...]
    source: str | None = None
    pipe: bool = False  # muxed to FFmpeg's stdout, so the muxer cannot seek back
    muxer: str | None = None  # FFmpeg's muxer, if not the one the extension names
    post: str | None = None  # a name in POST: what is done to the file FFmpeg made

    @property
    def format(self) -> str:
        ext = self.name.rsplit(".", 1)[1]
        return self.muxer or {"mkv": "matroska", "m4a": "ipod"}.get(ext, ext)


def _r(name: str, odd: str, *args: str | Sequence[str], **kw: object) -> Recipe:
    flat: list[str] = []
    for a in args:
        flat += [a] if isinstance(a, str) else list(a)
    return Recipe(name, odd, tuple(flat), **kw)  # type: ignore[arg-type]


RECIPES = (
    # The plain file two recipes below are cut from; in the corpus too, as the control.
    _r("h264_aac_plain.mp4", "nothing (the control)", VIDEO, TONE, H264, AAC),
    _r(
        "mkv_no_cues.mkv",
        "Matroska muxed to a pipe: no Cues (seek index), no duration",
        VIDEO,
        TONE,
        H264,
        AAC,
        pipe=True,
    ),
    _r(
        "mkv_cues_removed.mkv",
        "Matroska with a duration but no Cues (seek index), as live recorders write it",
        VIDEO,
        TONE,
        H264,
        AAC,
        post="drop_cues",
    ),
    _r(
        "mpeg2_mp2_program.vob",
        "MPEG program stream (DVD): B-frames' packets carry no timestamps",
        VIDEO,
        TONE,
        ("-c:v", "mpeg2video", "-bf", "2", "-c:a", "mp2"),
    ),
    _r(
        "mpeg2_mp2_svcd.mpg",
        "MPEG program stream (SVCD): B-frames' packets carry no timestamps",
        VIDEO,
        TONE,
        ("-s", "480x576", "-c:v", "mpeg2video", "-bf", "2", "-c:a", "mp2"),
        muxer="svcd",
    ),
    _r(
        "mkv_font_attachment.mkv",
        "Matroska with an attached font (an attachment stream)",
        VIDEO,
        TONE,
        H264,
        AAC,
        ("-attach", "{font}", "-metadata:s:t", "mimetype=application/x-truetype-font"),
    ),
    _r(
        "mka_cover_attachment.mkv",
        "audio in Matroska with a JPEG attachment (shown as a cover-art video stream)",
        TONE,
        AAC,
        ("-attach", "{source}", "-metadata:s:t", "mimetype=image/jpeg"),
        source="red_160x120.jpg",
    ),
    _r(
        "h264_aac_timecode.mov",
        "a timecode track (a data stream, as cameras write)",
        VIDEO,
        TONE,
        H264,
        AAC,
        ("-timecode", "01:00:00:00"),
    ),
    _r(
        "mkv_starts_at_5s.mkv",
        "first packet at 5 s (-output_ts_offset 5)",
        VIDEO,
        TONE,
        H264,
        AAC,
        ("-output_ts_offset", "5"),
    ),
    _r(
        "mkv_negative_ts.mkv",
        "timestamps from -1 s (-itsoffset -1, -avoid_negative_ts disabled)",
        *FROM_MINUS_1S,
    ),
    _r(
        "mp4_negative_ts.mp4",
        "timestamps from -1 s in MP4 (an edit list hides the first second)",
        *FROM_MINUS_1S,
    ),
    _r(
        "mp4_edit_list.mp4",
        "stream copy cut off a keyframe: an edit list skips the first 0.5 s",
        ("-ss", "0.5", "-i", "{source}", "-c", "copy"),
        source="h264_aac_plain.mp4",
    ),
    _r(
        "mp4_rotated_90.mp4",
        "rotation metadata (display matrix, 90 degrees): shown 240x320",
        ("-i", "{source}", "-c", "copy", "-metadata:s:v", "rotate=90"),
        source="h264_aac_plain.mp4",
    ),
    _r(
        "h264_10bit.mp4",
        "H.264 High 10 (yuv420p10le)",
        VIDEO,
        H264,
        ("-pix_fmt", "yuv420p10le"),
    ),
    _r(
        "h264_444.mp4",
        "H.264 High 4:4:4 Predictive (yuv444p)",
        VIDEO,
        H264,
        ("-pix_fmt", "yuv444p"),
    ),
    _r(
        "hevc_aac.mp4",
        "HEVC (libx265), hvc1 tag",
        VIDEO,
        TONE,
        ("-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"),
        ("-x265-params", "log-level=error"),
        AAC,
    ),
    _r(
        "av1_opus.mkv",
        "AV1 video",
        VIDEO,
        TONE,
        ("-c:v", "{av1}", "-c:a", "libopus"),
    ),
    _r(
        "vp9_opus.webm",
        "VP9 video",
        VIDEO,
        TONE,
        ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"),
    ),
    _r("h264_pcm.mov", "PCM audio in MOV", VIDEO, TONE, H264, ("-c:a", "pcm_s16le")),
    _r(
        "h264_aac_7.1.mp4",
        "7.1 audio (8 channels)",
        VIDEO,
        TONE,
        ("-filter:a", "pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0"),
        H264,
        AAC,
    ),
    _r("aac_mono_only.mp4", "audio alone (mono) in an MP4", TONE, AAC),
    _r(
        "h264_aac_with_cover.mp4",
        "video with a still cover picture (attached_pic) as a second video stream",
        VIDEO,
        TONE,
        PICTURE,
        ("-map", "0:v", "-map", "1:a", "-map", "2:v"),
        H264,
        AAC,
        ("-c:v:1", "mjpeg", "-disposition:v:1", "attached_pic"),
    ),
    _r(
        "aac_with_cover.m4a",
        "audio with a cover picture (attached_pic)",
        TONE,
        PICTURE,
        ("-map", "0:a", "-map", "1:v", "-c:v", "mjpeg", "-disposition:v", "attached_pic"),
        AAC,
    ),
    _r("h264_one_frame.mp4", "a single video frame (0.04 s)", VIDEO, H264, ("-frames:v", "1")),
    _r("red_160x120.jpg", "a still picture", PICTURE, ("-frames:v", "1"), muxer="image2"),
)
BY_NAME = {r.name: r for r in RECIPES}


class Unavailable(Exception):
    """This FFmpeg or machine cannot make the file (no encoder, no font)."""


def ffmpeg_version() -> str:
    out = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def encoders() -> str:
    return subprocess.run(
        [FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout


def find_font() -> Path | None:
    for root in FONT_DIRS:
        found = sorted(Path(root).glob("**/*.ttf")) if Path(root).is_dir() else []
        if found:  # the smallest: the corpus stays small
            return min(found, key=lambda p: (p.stat().st_size, p.name))
    return None


def _arguments(recipe: Recipe, directory: Path, have: str) -> list[str]:
    args = []
    for arg in recipe.args:
        if "{font}" in arg:
            font = find_font()
            if font is None:
                raise Unavailable(f"no TrueType font under {' or '.join(FONT_DIRS)}")
            arg = arg.replace("{font}", str(font))
        if "{av1}" in arg:
            av1 = next((e for e in AV1_ENCODERS if f" {e} " in have), None)
            if av1 is None:
                raise Unavailable(f"this FFmpeg has none of {', '.join(AV1_ENCODERS)}")
            arg = arg.replace("{av1}", av1)
        if "{source}" in arg:
            assert recipe.source is not None
            arg = arg.replace("{source}", str(directory / recipe.source))
        args.append(arg)
    for encoder in ("libx265", "libvpx-vp9", "libopus", "libx264"):
        if encoder in args and f" {encoder} " not in have:
            raise Unavailable(f"this FFmpeg has no {encoder} encoder")
    return args


def make(recipe: Recipe, directory: Path, have: str) -> Path:
    """Make one file (its source first). Errors: Unavailable, CalledProcessError."""
    path = directory / recipe.name
    if path.exists():
        return path
    if recipe.source is not None:
        make(BY_NAME[recipe.source], directory, have)
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    args += _arguments(recipe, directory, have)
    partial = directory / f"partial.{recipe.name}"
    args += ["-f", recipe.format]
    if recipe.pipe:
        with partial.open("wb") as out:
            subprocess.run([*args, "pipe:1"], stdout=out, check=True, timeout=120, env=QUIET)
    else:
        subprocess.run([*args, str(partial)], check=True, timeout=120, env=QUIET)
    if recipe.post is not None:
        POST[recipe.post](partial)
    partial.rename(path)
    return path


MATROSKA_CUES = bytes.fromhex("1c53bb6b")
EBML_VOID = 0xEC


def drop_cues(path: Path) -> None:
    """Turn the Matroska file's Cues element into a Void element of the same length.

    FFmpeg writes Cues whenever it can seek its output, and writes no duration when it
    cannot; this keeps the duration and loses the index. The header is rewritten in place:
    the 4-byte ID and its n-byte size become the 1-byte Void ID and the same size written
    in n + 3 bytes, so nothing after it moves.
    """
    data = bytearray(path.read_bytes())
    at = data.rfind(MATROSKA_CUES)  # the element itself; the SeekHead's mention is first
    first = data[at + 4]
    width = 9 - first.bit_length()  # an EBML vint's width is its leading zeros + 1
    size = int.from_bytes(data[at + 4 : at + 4 + width], "big") & ((1 << (7 * width)) - 1)
    if at < 0 or width + 3 > 8 or at + 4 + width + size != len(data):
        raise ValueError(f"{path.name}: no Cues element last in the file")
    new_width = width + 3
    data[at : at + 4 + width] = bytes([EBML_VOID]) + ((1 << (7 * new_width)) | size).to_bytes(
        new_width, "big"
    )
    path.write_bytes(data)


POST = {"drop_cues": drop_cues}


def build(cache: Path) -> dict[str, Path | Unavailable]:
    """Every recipe's file in a directory of `cache` named after the recipes and the
    FFmpeg version; a file this machine cannot make maps to why."""
    key = hashlib.sha256(repr((RECIPES, ffmpeg_version())).encode()).hexdigest()[:16]
    directory = cache / key
    directory.mkdir(parents=True, exist_ok=True)
    have = encoders()
    made: dict[str, Path | Unavailable] = {}
    for recipe in RECIPES:
        try:
            made[recipe.name] = make(recipe, directory, have)
        except Unavailable as exc:
            made[recipe.name] = exc
    return made


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("odd-corpus")
    for name, made in build(target).items():
        print(f"{name}: {made}" if isinstance(made, Unavailable) else made)


if __name__ == "__main__":
    main()
