"""The input safety rules shared by every FFmpeg and ffprobe run.

Only the `file` protocol and a whitelist of real media (and subtitle) demuxers, so that
a playlist, concat script or image-sequence pattern disguised as media cannot reach
other files or the network. Then, per input (`guard_inputs`), the decoders an operation
may use (of the 500-odd in FFmpeg's build, the mainstream ones; a Matroska file can name
any codec) and a decode-time cap on pixels per frame (`-max_pixels`), which holds when a
stream that probed small switches to a huge size mid-stream.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def probe_args(ffprobe: str, path: Path, max_pixels: int) -> list[str]:
    """ffprobe with the same file-only protocol and demuxer whitelist as FFmpeg's inputs
    (outputs too: still images, the one kind named by extension, never reach ffprobe),
    every allowed decoder (it looks at every stream) and the pixel cap."""
    return [
        ffprobe,
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-codec_whitelist",
        ",".join(ALL_DECODERS),
        "-max_pixels",
        str(max_pixels),
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        f"file:{path}",
    ]


def measure_args(ffmpeg: str, path: Path, max_pixels: int, limit_s: float) -> list[str]:
    """FFmpeg reading every audio and video packet without decoding them (stream copy to
    nothing), with `-progress` on stdout: how long a file that states no duration lasts.
    It stops at `limit_s`, so a file far over the duration limit costs no more than one
    just over it."""
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-codec_whitelist",
        ",".join(ALL_DECODERS),
        "-max_pixels",
        str(max_pixels),
        *input_args(path),
        "-map",
        "0:v?",
        "-map",
        "0:a?",
        "-c",
        "copy",
        "-t",
        f"{limit_s:.3f}",
        "-progress",
        "pipe:1",
        "-nostats",
        "-f",
        "null",
        "-",
    ]


# Decoders by kind. Not included on purpose: the long tail of FFmpeg's decoders (cfhd,
# exr, jpeg2000, tiff, utvideo, the game and screen codecs, ...), reachable through
# Matroska or AVI by naming their codec, and each a parser of its own.
VIDEO_DECODERS = (
    "h264", "hevc", "vp8", "libvpx", "vp9", "libvpx-vp9", "libdav1d", "libaom-av1", "av1",
    "mpeg4", "msmpeg4", "msmpeg4v2", "msmpeg4v1", "mpeg2video", "mpeg1video", "h261", "h263",
    "h263p", "h263i", "flv", "theora", "vc1", "wmv1", "wmv2", "wmv3", "prores", "dnxhd",
    "qtrle", "rawvideo",
)  # fmt: skip
IMAGE_DECODERS = ("mjpeg", "mjpegb", "png", "gif", "webp", "bmp")
AUDIO_DECODERS = (
    "aac", "aac_fixed", "aac_latm", "mp3float", "mp3", "mp2float", "mp2", "ac3", "ac3_fixed",
    "eac3", "dca", "truehd", "opus", "libopus", "vorbis", "libvorbis", "flac", "alac",
    "amrnb", "amrwb", "wmav1", "wmav2", "adpcm_ima_wav", "adpcm_ms", "pcm_alaw", "pcm_mulaw",
    "pcm_s8", "pcm_u8", "pcm_s16le", "pcm_s16be", "pcm_u16le", "pcm_u16be", "pcm_s24le",
    "pcm_s24be", "pcm_u24le", "pcm_u24be", "pcm_s32le", "pcm_s32be", "pcm_u32le", "pcm_u32be",
    "pcm_s64le", "pcm_s64be", "pcm_f16le", "pcm_f24le", "pcm_f32le", "pcm_f32be", "pcm_f64le",
    "pcm_f64be", "pcm_s8_planar", "pcm_s16le_planar", "pcm_s16be_planar", "pcm_s24le_planar",
    "pcm_s32le_planar", "pcm_dvd", "pcm_bluray",
)  # fmt: skip
SUBTITLE_DECODERS = ("subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text")
ALL_DECODERS = VIDEO_DECODERS + IMAGE_DECODERS + AUDIO_DECODERS + SUBTITLE_DECODERS
PICTURES = VIDEO_DECODERS + IMAGE_DECODERS

# What each operation decodes. A stream of a kind an operation leaves alone is never
# decoded (FFmpeg only warns that it cannot probe it), so its decoders are not allowed.
OPERATION_DECODERS: dict[str, tuple[str, ...]] = {
    "extract_audio": AUDIO_DECODERS,
    "thumbnail": PICTURES,
    "gif": PICTURES,
    "extract_subtitles": SUBTITLE_DECODERS,
    "burn_subtitles": PICTURES + AUDIO_DECODERS + SUBTITLE_DECODERS,
}
DEFAULT_DECODERS = PICTURES + AUDIO_DECODERS  # every other operation: audio and video


def guard_inputs(args: Sequence[str], operation: str, max_pixels: int) -> list[str]:
    """`args` with the operation's decoder allowlist and the pixel cap before each `-i`."""
    decoders = ",".join(OPERATION_DECODERS.get(operation, DEFAULT_DECODERS))
    guard = ["-codec_whitelist", decoders, "-max_pixels", str(max_pixels)]
    guarded: list[str] = []
    for arg in args:
        if arg == "-i":
            guarded += guard
        guarded.append(arg)
    return guarded
