from __future__ import annotations

from pathlib import Path

import pytest

from ffserve.media.image import NotAnImage, image_info
from tests.helpers import CORPUS, ffmpeg, probe, streams


@pytest.mark.parametrize(
    ("codec", "ext", "size", "extra"),
    [
        ("png", "png", (321, 243), []),
        ("mjpeg", "jpg", (640, 360), []),
        ("mjpeg", "jpg", (17, 999), ["-pix_fmt", "yuvj444p"]),
    ],
)
def test_header_matches_ffprobe(
    tmp_path: Path, codec: str, ext: str, size: tuple[int, int], extra: list[str]
) -> None:
    path = tmp_path / f"x.{ext}"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size[0]}x{size[1]}",
        "-frames:v",
        "1",
        *extra,
        str(path),
    )
    data = path.read_bytes()
    info = image_info(data, len(data))
    (truth,) = streams(probe(path), "video")
    video = info.video
    assert video is not None
    assert (video.codec, video.width, video.height) == (
        truth["codec_name"],
        truth["width"],
        truth["height"],
    )
    assert info.size_bytes == len(data)


def test_corpus_png() -> None:
    path = CORPUS / "image_451x300.png"
    if not path.exists():
        pytest.skip("corpus not available")
    info = image_info(path.read_bytes(), path.stat().st_size)
    assert info.video is not None and (info.video.width, info.video.height) == (451, 300)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"GIF89a",
        b"\xff\xd8\x00\x00",
        b"hello world" * 10,
    ],
)
def test_garbage_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        image_info(data, len(data))
