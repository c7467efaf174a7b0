"""Fixtures: generated media (once per session) and a live server on free loopback ports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ffserve.config import Config
from ffserve.service.server import Endpoints, serve
from tests.helpers import ffmpeg


@attrs.frozen
class Media:
    """Clips made with lavfi, so the suite runs anywhere."""

    clip: Path  # 2 s, 640x360 @ 25 fps, H.264 + AAC stereo 44.1 kHz
    silent: Path  # 2 s, 320x240 @ 25 fps, H.264, no audio
    tone: Path  # 3 s, 440 Hz sine, WAV mono 44.1 kHz
    long: Path  # 6 s, 320x240 @ 25 fps, H.264 + AAC
    odd: Path  # 1 s, 321x241 @ 30 fps, H.264 4:4:4 + AAC (odd size, non-4:2:0)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    root = tmp_path_factory.mktemp("media")
    clip, silent, tone, long, odd = (
        root / n for n in ("clip.mp4", "silent.mp4", "tone.wav", "long.mp4", "odd.mp4")
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=2:sample_rate=44100",
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
        str(clip),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(silent),
    )
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3:sample_rate=44100", str(tone))
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=6",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:duration=6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(long),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=321x241:rate=30:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        "-c:a",
        "aac",
        "-shortest",
        str(odd),
    )
    return Media(clip, silent, tone, long, odd)


def test_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    """Defaults, free loopback ports, a private temp dir, plus per-section overrides."""
    config = Config.from_dict({}, {})
    config = config.replace("server", host="127.0.0.1", port=0, http_port=0)
    config = config.replace("storage", temp_dir=str(tmp_path / "work"))
    for section, changes in sections.items():
        config = config.replace(section, **changes)
    return config


test_config.__test__ = False  # type: ignore[attr-defined]

StartServer = Callable[..., Awaitable[Endpoints]]


@pytest.fixture
async def start_server(nursery: trio.Nursery, tmp_path: Path) -> StartServer:
    """`await start_server(jobs={"max_concurrent": 1})` -> Endpoints of a running server."""

    async def start(**sections: dict[str, Any]) -> Endpoints:
        endpoints: Endpoints = await nursery.start(serve, test_config(tmp_path, **sections))
        return endpoints

    return start


@pytest.fixture
async def server(start_server: StartServer) -> Endpoints:
    return await start_server()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The server's temp root parent: job dirs live in `workdir/ffserve-*/job-*`."""
    return tmp_path / "work"


@pytest.fixture(scope="session")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 h of 16 kHz mono silence as FLAC (1.3 MB): `speed` 0.25 on it keeps FFmpeg busy
    for far longer than any test waits, so a test can hold the worker slot and then
    cancel, time out or disconnect it. Cheap to upload, cheap to make."""
    path = tmp_path_factory.mktemp("blocker") / "blocker.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "7200", "-c:a", "flac", str(path))
    return path


BLOCKER_OPTIONS = {"speed_factor": 0.25}
