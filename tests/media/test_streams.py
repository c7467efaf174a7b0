"""How long an input lasts, from what ffprobe says of its format (issue 13)."""

from __future__ import annotations

import json

import pytest

from ffserve.media.streams import from_first_packet, parse_probe


def probed(format_name: str, start_time: str | None, duration: str | None) -> bytes:
    fmt = {"format_name": format_name, "size": "1000"}
    if start_time is not None:
        fmt["start_time"] = start_time
    if duration is not None:
        fmt["duration"] = duration
    return json.dumps({"format": fmt, "streams": []}).encode()


@pytest.mark.parametrize(
    ("format_name", "start_time", "stated", "lasts", "start"),
    [
        # Matroska and MP4 state where the last packet ends, counted from 0.
        pytest.param("matroska,webm", "4.979000", "7.000000", 2.021, 4.979, id="mkv-from-5s"),
        pytest.param("matroska,webm", "-1.021000", "1.040000", 2.061, -1.021, id="mkv-from--1s"),
        pytest.param("mov,mp4,m4a,3gp,3g2,mj2", "0.978000", "3.000000", 2.022, 0.978, id="mp4"),
        # MPEG-TS/PS and MP3 state the span already.
        pytest.param("mpegts", "4200.000000", "4.000000", 4.0, 4200.0, id="ts-span"),
        pytest.param("mpeg", "0.529978", "2.016000", 2.016, 0.529978, id="ps-span"),
        pytest.param("mp3", "0.025057", "12.303673", 12.303673, 0.025057, id="mp3-span"),
        pytest.param("wav", None, "12.271746", 12.271746, 0.0, id="no-start"),
        pytest.param("matroska,webm", "0.000000", None, None, 0.0, id="no-duration"),
        pytest.param("matroska,webm", "5.000000", "5.000000", None, 5.0, id="nothing-left"),
    ],
)
def test_duration_is_the_contents(
    format_name: str, start_time: str | None, stated: str | None, lasts: float | None, start: float
) -> None:
    info = from_first_packet(parse_probe(probed(format_name, start_time, stated)))
    assert info.duration == lasts
    assert info.start_time == start


def test_an_output_keeps_its_stated_timeline() -> None:
    """Our outputs are read as stated: an MP4 whose video starts at 0.2 s (an empty edit)
    plays 0.72 s."""
    info = parse_probe(probed("mov,mp4,m4a,3gp,3g2,mj2", "0.200000", "0.720000"))
    assert info.duration == 0.72
