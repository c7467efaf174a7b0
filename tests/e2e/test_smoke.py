from __future__ import annotations

from pathlib import Path

import trio

from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import connect, probe, streams


async def test_thumbnail_round_trip(server: Endpoints, media: Media, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run("thumbnail", media.clip, {"timestamp": 1.0, "width": 320})
    assert result.types[0] == "ack"
    assert result.final["type"] == "completed", result.final
    info = probe(result.save(tmp_path))
    (video,) = streams(info, "video")
    assert (video["width"], video["height"]) == (320, 180)
    assert video["codec_name"] == "mjpeg"
