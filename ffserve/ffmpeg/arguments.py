"""The input safety rules shared by every FFmpeg and ffprobe run.

Only the `file` protocol and a whitelist of real media (and subtitle) demuxers, so that
a playlist, concat script or image-sequence pattern disguised as media cannot reach
other files or the network.
"""

from __future__ import annotations

from pathlib import Path

# Demuxers a client may feed us. Not included on purpose: hls, dash, concat, image2
# (sequence patterns), tty, lavfi, data and every raw/"anything goes" format.
MEDIA_DEMUXERS = (
    "mov",
    "matroska",
    "webm",
    "avi",
    "mpegts",
    "mpeg",
    "ogg",
    "flv",
    "asf",
    "mp3",
    "aac",
    "wav",
    "w64",
    "flac",
    "aiff",
    "caf",
    "amr",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "gif",
)
SUBTITLE_DEMUXERS = ("srt", "ass", "webvtt")
FORMAT_WHITELIST = ",".join(MEDIA_DEMUXERS + SUBTITLE_DEMUXERS)


def input_args(path: Path) -> list[str]:
    """The options and `-i` for reading an untrusted file."""
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-i",
        f"file:{path}",
    ]


def probe_args(ffprobe: str, path: Path) -> list[str]:
    """ffprobe with the same file-only protocol and demuxer whitelist as FFmpeg's inputs
    (outputs too: still images, the one kind named by extension, never reach ffprobe)."""
    return [
        ffprobe,
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        f"file:{path}",
    ]
