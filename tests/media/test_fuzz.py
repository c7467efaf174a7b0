"""Property-based fuzzing of the readers that parse untrusted bytes inside the server.

The MP4/ISO-BMFF box reader, the PNG/JPEG header reader and the Matroska seek-index
reader run in the server's own process, so a file built to break them must never raise,
never loop, and never cost more memory than the bounds say. Hypothesis mutates real
files (flipped bytes, box sizes rewritten, cut short, spliced), and each answer must be
a `MediaInfo` (or a bool) or the clean fallback (None: "let ffprobe decide";
NotAnImage; NotMatroska).
"""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffserve.media import matroska
from ffserve.media.image import NotAnImage, image_info
from ffserve.media.mp4 import boxes
from ffserve.media.mp4.streams import probe_isobmff
from ffserve.media.streams import MediaInfo
from tests.helpers import CORPUS, ffmpeg

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples in CI as here
)
# What a reader may allocate beyond the bytes it reads: the moov is read whole (at most
# MAX_MOOV_BYTES), the rest is a few small records.
HEADROOM = 8 * 1024 * 1024


def seeds() -> list[bytes]:
    """Real files: the corpus's MP4/MOV/3GP where present, plus ones made here."""
    found = [
        p.read_bytes() for p in sorted(CORPUS.glob("*")) if p.suffix in (".mp4", ".mov", ".3gp")
    ]
    made = Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))
    for name, args in {
        "a.mp4": (
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x48:rate=10:duration=0.5",
            "-c:v",
            "libx264",
        ),
        "b.m4a": ("-f", "lavfi", "-i", "sine=duration=0.3", "-c:a", "aac"),
        "c.mov": ("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=5:duration=0.4", "-c:v", "mjpeg"),
    }.items():
        ffmpeg(*args, str(made / name))
        found.append((made / name).read_bytes())
    # Keep the examples small and quick: the first 256 KiB holds every moov here but the
    # biggest files', whose cut-off copies are still valid inputs to fuzz.
    return [data[: 256 * 1024] for data in found]


SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "size", "cut", "splice", "huge"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind in ("size", "huge") and at + 4 <= len(data):
            # Box sizes are 32-bit big-endian words: rewrite one, small or absurd.
            value = (
                draw(st.integers(0, 64)) if kind == "size" else draw(st.integers(2**24, 2**32 - 1))
            )
            data[at : at + 4] = struct.pack(">I", value)
        elif kind == "cut":
            del data[at:]
        else:
            piece = draw(st.binary(min_size=1, max_size=64))
            data[at:at] = piece
    return bytes(data)


def bounded_probe(data: bytes) -> tuple[MediaInfo | None, int]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        tracemalloc.start()
        try:
            result = probe_isobmff(Path(f.name))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return result, peak


@FUZZ
@given(mutated())
def test_the_mp4_reader_answers_or_falls_back(data: bytes) -> None:
    result, peak = bounded_probe(data)  # any exception fails the test
    assert result is None or isinstance(result, MediaInfo)
    assert peak <= min(len(data), boxes.MAX_MOOV_BYTES) + HEADROOM
    if result is not None:
        assert all(s.kind in ("video", "audio", "subtitle", "data") for s in result.streams)
        assert len(result.streams) <= boxes.MAX_TRACKS


@pytest.mark.parametrize("size", [boxes.MAX_MOOV_BYTES + 1, 2**32 - 1])
def test_an_enormous_moov_is_not_read(size: int) -> None:
    """A moov claiming more than MAX_MOOV_BYTES is left to ffprobe without reading it."""
    head = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0)
    moov = struct.pack(">I4s", size, b"moov") + bytes(1024)
    result, peak = bounded_probe(head + moov)
    assert result is None and peak < HEADROOM


def image_seeds() -> list[bytes]:
    made = Path(tempfile.mkdtemp(prefix="fuzz-images-"))
    out = []
    for name in ("a.png", "b.jpg"):
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x32", "-frames:v", "1", str(made / name))
        out.append((made / name).read_bytes()[:4096])
    return out


IMAGE_SEEDS = image_seeds()


@FUZZ
@given(
    st.sampled_from(IMAGE_SEEDS),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    st.integers(0, 4096),
)
def test_the_image_reader_answers_or_refuses(
    head: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(head)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    try:
        info = image_info(bytes(data[:cut]), len(data))
    except NotAnImage:
        return
    video = info.streams[0]
    assert video.width and video.height and video.width < 2**32 and video.height < 2**32


def matroska_seeds() -> list[bytes]:
    made = Path(tempfile.mkdtemp(prefix="fuzz-mkv-"))
    clip = ("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=5:duration=0.6")
    out = []
    for name, extra in {"a.mkv": ("-c:v", "libx264"), "b.webm": ("-c:v", "libvpx")}.items():
        ffmpeg(*clip, *extra, str(made / name))
        out.append((made / name).read_bytes())
    return out


MATROSKA_SEEDS = matroska_seeds()


class CountingReader(io.BytesIO):
    """Counts the bytes read: the reader reads a few per element, never a whole Cluster."""

    read_total = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_total += len(data)
        return data


@FUZZ
@given(
    st.sampled_from(MATROSKA_SEEDS),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    st.integers(0, 1 << 16),
)
def test_the_matroska_reader_answers_or_refuses(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    f = CountingReader(bytes(data[:cut]))
    try:
        answer = matroska.has_cues(f, len(data[:cut]))
    except matroska.NotMatroska:
        return
    assert isinstance(answer, bool)
    # Element headers (at most 16 bytes each) and SeekHead entries' small values only.
    assert f.read_total <= 32 * matroska.MAX_ELEMENTS + matroska.MAX_SEEK_HEAD_BYTES
