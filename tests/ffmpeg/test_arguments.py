"""The input guards: the decoder allowlist and pixel cap go before every input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffserve.ffmpeg.arguments import (
    ALL_DECODERS,
    AUDIO_DECODERS,
    SUBTITLE_DECODERS,
    guard_inputs,
    input_args,
    probe_args,
)


def test_every_input_gets_the_guard() -> None:
    args = [*input_args(Path("/j/a")), "-map", "0:v", *input_args(Path("/j/b")), "out.mkv"]
    guarded = guard_inputs(args, "concat", 1000)
    assert guarded.count("-codec_whitelist") == guarded.count("-i") == 2
    for at in (i for i, arg in enumerate(guarded) if arg == "-i"):
        assert guarded[at - 4 : at] == ["-codec_whitelist", guarded[at - 3], "-max_pixels", "1000"]
    assert [a for a in guarded if a not in ("-codec_whitelist", "-max_pixels")][-1] == "out.mkv"


@pytest.mark.parametrize(
    ("operation", "has", "lacks"),
    [
        ("extract_audio", "aac", "h264"),
        ("thumbnail", "h264", "aac"),
        ("extract_subtitles", "subrip", "h264"),
        ("burn_subtitles", "ass", "cfhd"),
        ("speed", "vorbis", "subrip"),
    ],
)
def test_the_allowlist_is_per_operation(operation: str, has: str, lacks: str) -> None:
    guarded = guard_inputs(input_args(Path("/j/in")), operation, 10)
    allowed = guarded[guarded.index("-codec_whitelist") + 1].split(",")
    assert has in allowed and lacks not in allowed


def test_exotic_decoders_are_nowhere() -> None:
    for exotic in ("cfhd", "exr", "jpeg2000", "libopenjpeg", "tiff", "utvideo", "ffv1"):
        assert exotic not in ALL_DECODERS
    assert set(AUDIO_DECODERS) | set(SUBTITLE_DECODERS) <= set(ALL_DECODERS)


def test_ffprobe_is_guarded_too() -> None:
    args = probe_args("ffprobe", Path("/j/in"), 640 * 480)
    assert args[args.index("-max_pixels") + 1] == str(640 * 480)
    assert args[args.index("-codec_whitelist") + 1] == ",".join(ALL_DECODERS)
    assert args[-1] == "file:/j/in"
