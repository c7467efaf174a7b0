"""The in-process MP4/MOV/3GP reader says exactly what ffprobe says, or nothing.

Equivalence is checked field by field against `parse_probe` of real ffprobe output (with
the arguments the service uses), on generated files of every kind the reader claims and
on the real-media corpus; hostile inputs (truncations, random bytes, lying box sizes,
deep nesting) must give None quickly, within the read caps.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from ffserve.config import LimitsConfig
from ffserve.ffmpeg.arguments import probe_args
from ffserve.media.mp4 import boxes as isobmff_boxes
from ffserve.media.mp4.streams import probe_isobmff
from ffserve.media.streams import MediaInfo, parse_probe
from tests.helpers import CORPUS, ffmpeg

VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast"]
SUBTITLES = "1\n00:00:00,000 --> 00:00:00,500\nHello\n\n2\n00:00:00,500 --> 00:00:00,900\nWorld\n"

# name -> (ffmpeg arguments before the output, must the reader answer?)
GENERATED: dict[str, tuple[list[str], bool]] = {
    "h264_aac.mp4": ([*VIDEO, *AUDIO, *X264, "-c:a", "aac"], True),
    "h264_aac_faststart.mp4": (
        [*VIDEO, *AUDIO, *X264, "-c:a", "aac", "-movflags", "+faststart"],
        True,
    ),
    "h264_aac.mov": ([*VIDEO, *AUDIO, *X264, "-c:a", "aac"], True),
    "h264_bframes_high.mp4": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], True),
    "h264_baseline.mp4": ([*VIDEO, *X264, "-profile:v", "baseline"], True),
    "h264_high10.mp4": ([*VIDEO, *X264, "-pix_fmt", "yuv420p10le"], True),
    "h264_high444.mp4": ([*VIDEO, *X264, "-pix_fmt", "yuv444p"], True),
    "h264_odd.mp4": ([*VIDEO, *X264, "-vf", "scale=162:122", "-pix_fmt", "yuv444p"], True),
    "h264_interlaced.mp4": ([*VIDEO, *X264, "-flags", "+ildct+ilme"], True),
    "h264_ntsc.mp4": (
        ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30000/1001:duration=0.5", *X264],
        True,
    ),
    "video_only.mp4": ([*VIDEO, *X264], True),
    "audio_only.m4a": ([*AUDIO, "-c:a", "aac"], True),
    "aac_22k.m4a": (
        ["-f", "lavfi", "-i", "sine=sample_rate=22050:duration=1", "-c:a", "aac"],
        True,
    ),
    "aac_51.m4a": (["-f", "lavfi", "-i", "sine=duration=1", "-ac", "6", "-c:a", "aac"], True),
    "mp3.mp4": ([*AUDIO, "-ac", "2", "-c:a", "libmp3lame"], True),
    "opus.mp4": ([*AUDIO, "-c:a", "libopus"], True),
    "alac.m4a": ([*AUDIO, "-c:a", "alac"], True),
    "flac.mp4": ([*AUDIO, "-c:a", "flac", "-strict", "-2"], True),
    "h263.3gp": (
        ["-f", "lavfi", "-i", "testsrc2=size=176x144:rate=15:duration=1", "-c:v", "h263"],
        True,
    ),
    "hevc.mp4": ([*VIDEO, "-c:v", "libx265", "-x265-params", "log-level=none"], False),
    "mpeg4.mp4": ([*VIDEO, "-c:v", "mpeg4"], False),
    "ac3.mp4": ([*AUDIO, "-c:a", "ac3"], False),
    "fragmented.mp4": (
        [*VIDEO, *AUDIO, *X264, "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"],
        False,
    ),
}
# Made from h264_aac.mp4 by stream copy: (name, extra arguments, rotation ffprobe reports).
ROTATED = [("rot90.mp4", "90", 90), ("rot180.mov", "180", -180), ("rot270.mp4", "270", -90)]


def real_probe(path: Path) -> MediaInfo:
    args = probe_args("ffprobe", path, LimitsConfig().max_pixels)
    raw = subprocess.run(args, check=True, capture_output=True).stdout
    return parse_probe(raw)


def assert_same(mine: MediaInfo, truth: MediaInfo) -> None:
    """Field by field, so that a failure says which field."""
    for field in ("format_name", "duration", "start_time", "size_bytes", "bit_rate"):
        assert getattr(mine, field) == getattr(truth, field), field
    assert len(mine.streams) == len(truth.streams)
    for ours, theirs in zip(mine.streams, truth.streams, strict=True):
        assert attrs.asdict(ours) == attrs.asdict(theirs), ours.index
    assert mine == truth


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isobmff")
    (root / "subs.srt").write_text(SUBTITLES)
    for name, (args, _) in GENERATED.items():
        ffmpeg(*args, "-t", "1", str(root / name))
    ffmpeg(
        *VIDEO,
        *AUDIO,
        "-i",
        str(root / "subs.srt"),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        *X264,
        "-c:a",
        "aac",
        "-c:s",
        "mov_text",
        "-metadata:s:s:0",
        "language=fre",
        str(root / "subtitles.mp4"),
    )
    for name, angle, _ in ROTATED:
        ffmpeg(
            "-i", str(root / "h264_aac.mp4"), "-c", "copy", "-metadata:s:v:0", f"rotate={angle}",
            str(root / name),
        )  # fmt: skip
    return root


@pytest.mark.parametrize("name", [*GENERATED, "subtitles.mp4", *(r[0] for r in ROTATED)])
def test_generated_matches_ffprobe(generated: Path, name: str) -> None:
    path = generated / name
    truth = real_probe(path)
    mine = probe_isobmff(path)
    must_answer = GENERATED.get(name, ([], True))[1]
    if must_answer:
        assert mine is not None
    if mine is not None:
        assert_same(mine, truth)


@pytest.mark.parametrize(("name", "angle", "rotation"), ROTATED)
def test_rotation(generated: Path, name: str, angle: str, rotation: int) -> None:
    info = probe_isobmff(generated / name)
    assert info is not None and info.video is not None
    assert info.video.rotation == rotation
    assert info.video.display_size == ((120, 160) if rotation % 180 else (160, 120))


def test_fragmented_falls_back(generated: Path) -> None:
    assert probe_isobmff(generated / "fragmented.mp4") is None


# Corpus files the reader leaves to ffprobe, and why: none at present.
CORPUS_FALLBACK: dict[str, str] = {}


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".mp4", ".mov", ".3gp", ".m4a"))


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_matches_ffprobe(path: Path) -> None:
    mine = probe_isobmff(path)
    if path.name in CORPUS_FALLBACK:
        assert mine is None
        return
    assert mine is not None
    assert_same(mine, real_probe(path))


def test_not_isobmff(tmp_path: Path) -> None:
    path = tmp_path / "x.srt"
    path.write_text(SUBTITLES)
    assert probe_isobmff(path) is None
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert probe_isobmff(empty) is None


# Hostile input: every case must give None, quickly, reading little.


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every read the reader makes."""
    sizes: list[int] = []
    original = isobmff_boxes.Reader.read

    def read(self: isobmff_boxes.Reader, offset: int, length: int) -> bytes:
        sizes.append(length)
        return original(self, offset, length)

    monkeypatch.setattr(isobmff_boxes.Reader, "read", read)
    yield sizes


def timed_probe(path: Path) -> MediaInfo | None:
    start = time.perf_counter()
    result = probe_isobmff(path)
    assert time.perf_counter() - start < 0.5
    return result


def test_truncated_anywhere(generated: Path, tmp_path: Path) -> None:
    data = (generated / "h264_aac_faststart.mp4").read_bytes()
    rng = random.Random(1)
    cuts = sorted({*range(0, 200, 7), *rng.sample(range(len(data)), 150)})
    path = tmp_path / "cut.mp4"
    for cut in cuts:
        path.write_bytes(data[:cut])
        assert timed_probe(path) is None, cut


def test_truncated_moov_at_end(generated: Path, tmp_path: Path) -> None:
    data = (generated / "h264_aac.mp4").read_bytes()
    moov = data.rindex(b"moov") - 4
    path = tmp_path / "cut.mp4"
    for cut in range(moov, len(data), max(1, (len(data) - moov) // 80)):
        path.write_bytes(data[:cut])
        assert timed_probe(path) is None, cut


def test_corrupted_bytes(generated: Path, tmp_path: Path) -> None:
    """Flipped bytes in the moov: None, or (if harmless) still what ffprobe says."""
    data = bytearray((generated / "h264_aac_faststart.mp4").read_bytes())
    moov = data.index(b"moov") - 4
    (moov_size,) = struct.unpack_from(">I", data, moov)
    rng = random.Random(2)
    path = tmp_path / "bad.mp4"
    for _ in range(60):
        bad = bytearray(data)
        for _ in range(3):
            bad[moov + rng.randrange(moov_size)] = rng.randrange(256)
        path.write_bytes(bad)
        timed_probe(path)  # must not raise nor hang; equality is checked below on a sample
    for _ in range(5):
        bad = bytearray(data)
        bad[moov + rng.randrange(moov_size)] ^= 0xFF
        path.write_bytes(bad)
        mine = timed_probe(path)
        if mine is not None:
            try:
                truth = real_probe(path)
            except subprocess.CalledProcessError:
                pytest.fail("answered for a file ffprobe rejects")
            assert_same(mine, truth)


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "noise.mp4"
    for size in (1, 7, 8, 16, 100, 4096):
        path.write_bytes(rng.randbytes(size))
        assert timed_probe(path) is None
    for head in (b"ftyp", b"moov"):
        path.write_bytes(struct.pack(">I4s", 4096, head) + rng.randbytes(4092))
        assert timed_probe(path) is None


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


FTYP = box(b"ftyp", b"isom\0\0\2\0isomiso2avc1mp41")


@pytest.mark.parametrize(
    "tail",
    [
        struct.pack(">I4s", 0, b"moov") + b"\0" * 64,  # size 0: to the end of the file
        struct.pack(">I4s", 1, b"moov") + struct.pack(">Q", 12) + b"\0" * 64,  # 64-bit < header
        struct.pack(">I4s", 1, b"moov") + struct.pack(">Q", 10**12),  # claims 10^12 bytes
        struct.pack(">I4s", 0xFFFFFFFF, b"moov") + b"\0" * 64,  # past the end
        struct.pack(">I4s", 4, b"moov"),  # smaller than its header
        box(b"moov", box(b"trak", box(b"mdia"))),  # empty track
    ],
)
def test_lying_sizes(tmp_path: Path, tail: bytes, reads: list[int]) -> None:
    path = tmp_path / "lies.mp4"
    path.write_bytes(FTYP + tail)
    assert timed_probe(path) is None
    assert sum(reads) < 1024


def test_deep_nesting(tmp_path: Path) -> None:
    inner = box(b"stbl")
    for _ in range(5000):
        inner = box(b"minf", inner)
    path = tmp_path / "deep.mp4"
    path.write_bytes(FTYP + box(b"moov", box(b"trak", inner)))
    assert timed_probe(path) is None


def test_many_boxes(tmp_path: Path) -> None:
    path = tmp_path / "many.mp4"
    path.write_bytes(FTYP + box(b"moov", box(b"udta") * 200_000))
    assert timed_probe(path) is None
    path.write_bytes(FTYP + box(b"free") * 10_000)
    assert timed_probe(path) is None


def test_huge_moov_is_not_read(tmp_path: Path, reads: list[int]) -> None:
    """A moov over the cap is skipped unread (a sparse file: no disk is used)."""
    path = tmp_path / "huge.mp4"
    size = isobmff_boxes.MAX_MOOV_BYTES + 1024
    with path.open("wb") as f:
        f.write(FTYP + struct.pack(">I4s", size + 8, b"moov"))
        f.truncate(len(FTYP) + 8 + size)
    assert timed_probe(path) is None
    assert sum(reads) < 1024
    os.unlink(path)


# Long tracks: the sample tables are streamed over, never held as Python objects.

LONG_SAMPLES = 4_000_003  # 8 + 4 + 4 bytes each in stts, stsz and stco: a 64 MB moov


def long_track_file(path: Path, samples: int, *, small: bool = False) -> tuple[int, int, int]:
    """An AMR-NB track of `samples` samples, each its own chunk, with every table as long
    as it can be (no run in the stts, a size per sample, an offset per chunk); the mdat
    comes first and the moov at the end.

    With `small`, every duration, size and chunk offset is at most 256, the integers
    Python keeps cached: reading the tables then allocates nothing per entry, which
    keeps tracemalloc quick (entries turned into ints one at a time are freed at once
    either way; what the memory test looks for is tables held whole).
    Returns the moov's size, the sum of the sample sizes and the sum of the durations.
    """
    timescale = 8000
    if small:
        durations = [20 + (i % 7) * 30 for i in range(64)]
        sizes = [10 + (i % 13) * 17 for i in range(64)]
        mdat_size = 200
    else:
        durations = [160 + (i % 7) * 100 for i in range(64)]
        sizes = [1000 + (i % 13) * 37 for i in range(64)]
        mdat_size = 4096
    mdat = box(b"mdat", b"\0" * mdat_size)
    mdat_at = len(FTYP) + 8
    # Offsets spread over the mdat; the smallest is its first byte, the largest its last.
    offsets = [mdat_at + (i * 67) % mdat_size for i in range(64)]
    offsets[1] = mdat_at + mdat_size - 1

    reps, rest = divmod(samples, 64)

    def table(entries: list[int]) -> bytes:
        packed = struct.pack(f">{len(entries)}I", *entries)
        return packed * reps + packed[: len(packed) * rest // 64]

    stts = box(
        b"stts", struct.pack(">II", 0, samples) + table([v for d in durations for v in (1, d)])
    )
    stsz = box(b"stsz", struct.pack(">III", 0, 0, samples) + table(sizes))
    stco = box(b"stco", struct.pack(">II", 0, samples) + table(offsets))
    total_duration = sum(durations) * reps + sum(durations[:rest])
    total_size = sum(sizes) * reps + sum(sizes[:rest])
    entry = box(
        b"samr",
        struct.pack(">6xH", 1) + struct.pack(">HH4sHHHHI", 0, 0, b"", 1, 16, 0, 0, 8000 << 16),
    )
    stbl = box(
        b"stbl",
        box(b"stsd", struct.pack(">II", 0, 1) + entry)
        + stts
        + box(b"stsc", struct.pack(">IIIII", 0, 1, 1, 1, 1))
        + stsz
        + stco,
    )
    matrix = struct.pack(">9i", *isobmff_boxes.IDENTITY_MATRIX)
    mvhd = struct.pack(">IIIII", 0, 0, 0, 1000, total_duration // 8)
    mvhd += struct.pack(">IH10x", 0x10000, 0x100) + matrix + b"\0" * 24 + struct.pack(">I", 2)
    tkhd = struct.pack(">IIIIII", 7, 0, 0, 1, 0, total_duration // 8) + b"\0" * 8
    tkhd += struct.pack(">HHH2x", 0, 0, 0x100) + matrix + struct.pack(">II", 0, 0)
    mdhd = struct.pack(">IIIIIHH", 0, 0, 0, timescale, total_duration, 0x55C4, 0)  # und
    hdlr = struct.pack(">I4s4s12x", 0, b"", b"soun") + b"SoundHandler\0"
    dref = box(b"dref", struct.pack(">II", 0, 1) + box(b"url ", struct.pack(">I", 1)))
    minf = box(b"minf", box(b"smhd", b"\0" * 8) + box(b"dinf", dref) + stbl)
    mdia = box(b"mdia", box(b"mdhd", mdhd) + box(b"hdlr", hdlr) + minf)
    moov = box(b"moov", box(b"mvhd", mvhd) + box(b"trak", box(b"tkhd", tkhd) + mdia))
    with path.open("wb") as f:
        f.write(FTYP)
        f.write(mdat)
        f.write(moov)
    return len(moov), total_size, total_duration


def check_long_track(path: Path, info: MediaInfo | None, size: int, duration: int) -> None:
    assert info is not None
    (stream,) = info.streams
    assert (stream.codec, stream.sample_rate, stream.channels) == ("amr_nb", 8000, 1)
    assert stream.bit_rate == size * 8 * 8000 // duration
    assert_same(info, real_probe(path))


@pytest.mark.parametrize("samples", [1, 63, 64, 65_537, LONG_SAMPLES])
def test_long_tables_match_ffprobe(tmp_path: Path, samples: int) -> None:
    path = tmp_path / "long.mp4"
    moov_size, size, duration = long_track_file(path, samples)
    assert moov_size <= isobmff_boxes.MAX_MOOV_BYTES
    start = time.perf_counter()
    info = probe_isobmff(path)
    assert time.perf_counter() - start < 5
    check_long_track(path, info, size, duration)


def test_long_tables_memory(tmp_path: Path) -> None:
    """One probe holds the moov and little else, however long its tables.

    The bound the service's memory budget assumes is 3x the moov; holding the tables
    as tuples of ints took 4.5x (with the moov's entries above 256), streaming ~1x.
    """
    path = tmp_path / "long.mp4"
    moov_size, size, duration = long_track_file(path, LONG_SAMPLES, small=True)
    tracemalloc.start()
    try:
        info = probe_isobmff(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < moov_size * 3 // 2 + (8 << 20), (peak, moov_size)
    check_long_track(path, info, size, duration)
