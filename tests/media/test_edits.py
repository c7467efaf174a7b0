"""What an MP4's edit lists hide, read from its boxes (issue 13): what a stream copy into
a container without edit lists would show."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffserve.media.mp4.boxes import Movie, Track
from ffserve.media.mp4.edits import hidden_by_track, hidden_seconds
from tests.helpers import ffmpeg

SOURCES = [
    *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2"),
    *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2"),
    *("-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac"),
]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edits") / "plain.mp4"
    ffmpeg(*SOURCES, str(path))
    return path


def test_a_plain_file_hides_only_the_encoders_priming(plain: Path) -> None:
    hidden = hidden_seconds(plain)
    assert hidden is not None
    video, audio = hidden
    assert video == 0.0
    assert audio == pytest.approx(1024 / 48000, abs=1e-6)  # AAC's priming frame


def test_a_copy_cut_off_a_keyframe_hides_the_gop_before_the_cut(
    plain: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    ffmpeg("-ss", "0.5", "-i", str(plain), "-c", "copy", str(cut))
    hidden = hidden_seconds(cut)
    assert hidden is not None
    video, audio = hidden
    assert video == pytest.approx(0.5, abs=0.01)  # one GOP from 0: the first 0.5 s kept
    assert audio == pytest.approx(0.5 + 1024 / 48000, abs=0.03)


def test_not_an_mp4_is_not_understood(plain: Path, tmp_path: Path) -> None:
    mkv = tmp_path / "plain.mkv"
    ffmpeg("-i", str(plain), "-c", "copy", str(mkv))
    assert hidden_seconds(mkv) is None


def test_an_empty_edit_is_a_delay_not_hidden_media() -> None:
    # 2 s stored at timescale 1000; 1 s of delay, then all 2 s played (movie timescale 600).
    track = Track(timescale=1000, stts_duration=2000, edits=[(600, -1), (1200, 0)])
    untouched = Track(timescale=1000, stts_duration=2000)
    assert hidden_by_track(Movie(timescale=600, tracks=[track, untouched])) == (0.0, 0.0)
    cut = Track(timescale=1000, stts_duration=2000, edits=[(900, 500)])
    assert hidden_by_track(Movie(timescale=600, tracks=[cut])) == (pytest.approx(0.5),)
