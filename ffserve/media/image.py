"""Reading a still image's header (PNG, JPEG) without a subprocess. Sans-I/O.

Verifying a thumbnail with ffprobe costs a process start (about 60 ms of CPU here), which
is most of a small job's cost; the header says everything `output_metadata` reports for a
still image, and a header that does not parse means the output is not a valid image.
"""

from __future__ import annotations

import struct

from ffserve.media.streams import MediaInfo, Stream

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, ...); not DHT,
# JPG or DAC, which share the range.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class NotAnImage(ValueError):
    pass


def png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise NotAnImage("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(b"\xff\xd8"):
        raise NotAnImage("not a JPEG")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise NotAnImage("corrupt JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise NotAnImage("JPEG without a frame header")


def image_info(data: bytes, size_bytes: int) -> MediaInfo:
    """MediaInfo for a PNG or JPEG from its first bytes. Errors: NotAnImage."""
    if data.startswith(PNG_SIGNATURE):
        codec, (width, height) = "png", png_size(data)
    else:
        codec, (width, height) = "mjpeg", jpeg_size(data)
    if not (width and height):
        raise NotAnImage("image with no pixels")
    stream = Stream(index=0, kind="video", codec=codec, width=width, height=height)
    return MediaInfo(f"{codec}_pipe", None, size_bytes, None, (stream,))
