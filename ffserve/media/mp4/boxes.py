"""Reading an MP4/MOV/3GP (ISO BMFF) file's boxes: the movie and its tracks, as records.

The top-level boxes are walked by their headers; the one `moov` is read whole and its
`mvhd` and each `trak` (handler, timescale, language, matrix, edit list, sample
description and sample tables) become a `Movie` holding `Track`s. `ffserve.media.mp4.streams`
turns those into what ffprobe would report; this module knows the container only.

The input is untrusted: a box this module does not fully understand, or one that may
change what ffprobe reports (fragments, external data, track references, a second
sample description...), is `Unsure` rather than a guess.

Work is bounded: at most `MAX_TOP_BOXES` top-level boxes, a `moov` of at most
`MAX_MOOV_BYTES`, `MAX_BOXES` boxes and `MAX_DEPTH` levels inside it, a few bytes of
each track's first sample, and `MAX_READ_BYTES` read in all. Memory is the moov and
little more: the per-sample tables (millions of entries in a long file) are summed and
checked a `TABLE_CHUNK` at a time, never turned into Python ints all at once, and a
sample description over `MAX_SAMPLE_ENTRY_BYTES` (the one part copied) is ffprobe's.

Errors: `Unsure`; OSError from reading the file; IndexError, struct.error and the like
when a box ends early (`probe_isobmff` treats all but OSError alike).
"""

from __future__ import annotations

import operator
import os
import struct
import sys
from array import array
from collections.abc import Iterator
from typing import BinaryIO

import attrs

from ffserve.media.mp4.codecs import Unsure

MAX_TOP_BOXES = 64
MAX_MOOV_BYTES = 64 << 20
MAX_BOXES = 4096
MAX_DEPTH = 10
MAX_TRACKS = 16
MAX_SAMPLE_TABLE = 10_000_000  # entries in one stts/stsz: bounded by the moov size anyway
MAX_SAMPLE_ENTRY_BYTES = 1 << 20  # a sample description (codec configuration) is copied
TABLE_CHUNK = 1 << 16  # entries of a sample table unpacked at a time (even: stts pairs)
SAMPLE_PEEK_BYTES = 64 << 10
MAX_READ_BYTES = MAX_MOOV_BYTES + (1 << 20)

IDENTITY_MATRIX = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


class Reader:
    """Reads from the file at absolute offsets, counting bytes against MAX_READ_BYTES."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.size = os.fstat(file.fileno()).st_size
        self.budget = MAX_READ_BYTES

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size or length > self.budget:
            raise Unsure("read out of bounds")
        self.budget -= length
        self.file.seek(offset)
        data = self.file.read(length)
        if len(data) != length:
            raise Unsure("short read")
        return data


def read_movie(reader: Reader) -> Movie:
    """The file's movie: its moov box parsed, with where its media data lies."""
    moov, media = _find_moov(reader)
    movie = Movie(media=media)
    _parse_moov(moov, movie)
    return movie


def _find_moov(reader: Reader) -> tuple[bytes, tuple[int, int]]:
    """The one moov box's payload, and the span of the mdat boxes' payloads.

    Top-level boxes are walked by their headers only.
    """
    offset, moov, count = 0, None, 0
    media_start, media_end = reader.size, 0
    while offset < reader.size:
        count += 1
        if count > MAX_TOP_BOXES:
            raise Unsure("too many top-level boxes")
        if reader.size - offset < 8:
            raise Unsure("trailing bytes after the last box")
        size, kind = struct.unpack(">I4s", reader.read(offset, 8))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", reader.read(offset + 8, 8))
            header = 16
        elif size == 0:
            size = reader.size - offset
        if size < header or offset + size > reader.size:
            raise Unsure("box runs past the end of the file")
        if count == 1 and kind not in (b"ftyp", b"moov"):
            raise Unsure("not an ftyp-led file")
        if kind == b"ftyp":
            if count != 1:
                raise Unsure("misplaced ftyp")
            brand = reader.read(offset + header, 4) if size >= header + 4 else b""
            if brand[:3] in (b"avi", b"hei", b"mif", b"msf") or brand == b"crx ":
                raise Unsure("image or raw brand")
        elif kind == b"moov":
            if moov is not None:
                raise Unsure("second moov")
            if size - header > MAX_MOOV_BYTES:
                raise Unsure("moov too large")
            moov = reader.read(offset + header, size - header)
        elif kind == b"mdat":
            media_start, media_end = min(media_start, offset + header), offset + size
        elif kind not in (b"free", b"skip", b"wide", b"uuid", b"udta", b"meta"):
            # moof, mfra, sidx, styp (fragments), pnot, jP2 ... are ffprobe's business.
            raise Unsure(f"top-level {kind!r}")
        offset += size
    if moov is None:
        raise Unsure("no moov")
    return moov, (media_start, media_end)


@attrs.define
class Track:
    handler: bytes = b""
    timescale: int = 0
    duration: int = 0
    language: str | None = None
    matrix: tuple[int, ...] = IDENTITY_MATRIX
    entry_type: bytes = b""
    entry: bytes = b""  # the sample entry's payload, after its 8-byte header
    sample_counts: int = 0
    stts_duration: int = 0
    sample_count: int = 0  # stsz's
    data_size: int = 0  # the sum of the sample sizes
    first_sample_size: int = 0
    first_chunk_offset: int | None = None
    edits: list[tuple[int, int]] = attrs.Factory(list)  # (segment duration, media time)
    seen: set[bytes] = attrs.Factory(set)


@attrs.define
class Movie:
    timescale: int = 0
    duration: int = 0
    matrix: tuple[int, ...] = IDENTITY_MATRIX
    tracks: list[Track] = attrs.Factory(list)
    boxes: int = 0
    media: tuple[int, int] = (0, 0)  # where chunks may be: the mdat boxes' span


def _boxes(movie: Movie, data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    pos = start
    while end - pos >= 8:
        movie.boxes += 1
        if movie.boxes > MAX_BOXES:
            raise Unsure("too many boxes")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise Unsure("truncated large box")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise Unsure("box overruns its parent")
        yield kind, pos + header, pos + size
        pos += size
    if pos != end and data.count(0, pos, end) != end - pos:
        raise Unsure("junk at the end of a box")


def _parse_moov(moov: bytes, movie: Movie) -> None:
    for kind, start, end in _boxes(movie, moov, 0, len(moov)):
        if kind == b"mvhd":
            if movie.timescale:
                raise Unsure("second mvhd")
            version = moov[start]
            if version == 1:
                movie.timescale, movie.duration = struct.unpack_from(">IQ", moov, start + 20)
                matrix_at = start + 4 + 28 + 4 + 2 + 2 + 8
            elif version == 0:
                movie.timescale, movie.duration = struct.unpack_from(">II", moov, start + 12)
                matrix_at = start + 4 + 16 + 4 + 2 + 2 + 8
            else:
                raise Unsure("mvhd version")
            movie.matrix = struct.unpack_from(">9i", moov, matrix_at)
            if matrix_at + 36 > end:
                raise Unsure("short mvhd")
        elif kind == b"trak":
            if len(movie.tracks) >= MAX_TRACKS:
                raise Unsure("too many tracks")
            track = Track()
            _parse_container(moov, start, end, movie, track, 1)
            if track.first_chunk_offset is None:
                raise Unsure("track without chunks")
            movie.tracks.append(track)
        elif kind not in (b"udta", b"meta", b"iods", b"free", b"skip", b"uuid", b"wide"):
            # mvex (fragments), cmov (compressed), rmra (references), pssh (DRM), ...
            raise Unsure(f"moov has {kind!r}")
    if movie.matrix != IDENTITY_MATRIX:
        raise Unsure("movie matrix")


# Containers walked inside a trak, and leaf boxes that change nothing ffprobe reports.
TRAK_CONTAINERS = frozenset({b"mdia", b"minf", b"stbl", b"edts", b"dinf"})
TRAK_IGNORED = frozenset(
    {
        b"udta", b"meta", b"free", b"skip", b"vmhd", b"smhd", b"nmhd", b"sthd", b"gmhd",
        b"ctts", b"stss", b"stps", b"sdtp", b"sbgp", b"sgpd", b"cslg", b"tapt", b"load",
        b"uuid", b"txas", b"hmhd", b"subs", b"saiz", b"saio",
    }
)  # fmt: skip


REPEATABLE = frozenset({b"udta", b"meta", b"free", b"skip", b"uuid", b"hdlr"})


def _parse_container(
    data: bytes, start: int, end: int, movie: Movie, track: Track, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise Unsure("nested too deep")
    for kind, s, e in _boxes(movie, data, start, end):
        if kind in track.seen and kind not in REPEATABLE:
            # A second of anything we read (or of a container) is not worth the doubt.
            raise Unsure(f"second {kind!r} in a track")
        track.seen.add(kind)
        if kind in TRAK_CONTAINERS:
            _parse_container(data, s, e, movie, track, depth + 1)
        elif kind == b"tkhd":
            version = data[s]
            matrix_at = s + (4 + 32 + 16 if version == 1 else 4 + 20 + 16)
            if version > 1 or matrix_at + 36 > e:
                raise Unsure("tkhd")
            track.matrix = struct.unpack_from(">9i", data, matrix_at)
        elif kind == b"mdhd":
            _parse_mdhd(data, s, e, track)
        elif kind == b"hdlr":
            # The handler in mdia says what the track is; QuickTime also puts a data
            # handler (dhlr/alis) in minf, which FFmpeg ignores too.
            component, handler = struct.unpack_from(">4s4s", data, s + 4)
            if component != b"dhlr":
                if track.handler:
                    raise Unsure("second media handler")
                track.handler = handler
        elif kind == b"dref":
            _check_dref(data, s, e, movie)
        elif kind == b"elst":
            _parse_elst(data, s, e, track)
        elif kind == b"stsd":
            _parse_stsd(data, s, e, track)
        elif kind == b"stts":
            _parse_stts(data, s, e, track)
        elif kind == b"stsz":
            _parse_stsz(data, s, e, track)
        elif kind == b"stsc":
            (count,) = struct.unpack_from(">I", data, s + 4)
            if count < 1 or s + 8 + 12 * count > e:
                raise Unsure("stsc")
        elif kind in (b"stco", b"co64"):
            if b"stco" in track.seen and b"co64" in track.seen:
                raise Unsure("stco and co64")
            (count,) = struct.unpack_from(">I", data, s + 4)
            width = 4 if kind == b"stco" else 8
            if count < 1 or s + 8 + width * count > e:
                raise Unsure("chunk offsets")
            # Every chunk in the media data (a truncated or spliced file is ffprobe's).
            for chunk in _table(data, s + 8, count, "Q" if width == 8 else _U32):
                if min(chunk) < movie.media[0] or max(chunk) >= movie.media[1]:
                    raise Unsure("chunk outside the media data")
                if track.first_chunk_offset is None:
                    track.first_chunk_offset = chunk[0]
        elif kind == b"tref":
            raise Unsure("track references (chapters, timecode, ...)")
        elif kind not in TRAK_IGNORED:
            raise Unsure(f"track has {kind!r}")


def _parse_mdhd(data: bytes, s: int, e: int, track: Track) -> None:
    version = data[s]
    if version == 1:
        track.timescale, track.duration, language = struct.unpack_from(">IQH", data, s + 20)
    elif version == 0:
        track.timescale, track.duration, language = struct.unpack_from(">IIH", data, s + 12)
    else:
        raise Unsure("mdhd version")
    if track.timescale <= 0:
        raise Unsure("mdhd timescale")
    # FFmpeg's ff_mov_lang_to_iso639: packed ISO 639-2 letters, or a Macintosh language
    # code below 0x400 (0 is English; the others we leave to ffprobe); 0x7fff means none.
    if language >= 0x400 and language != 0x7FFF:
        track.language = "".join(chr(0x60 + (language >> shift & 0x1F)) for shift in (10, 5, 0))
    elif language == 0:
        track.language = "eng"
    elif language != 0x7FFF:
        raise Unsure("unusual language code")


def _check_dref(data: bytes, s: int, e: int, movie: Movie) -> None:
    """Only self-contained data references: an external one is another file."""
    (count,) = struct.unpack_from(">I", data, s + 4)
    if count != 1:
        raise Unsure("data references")
    for kind, ds, _ in _boxes(movie, data, s + 8, e):
        if kind not in (b"url ", b"alis") or not data[ds + 3] & 1:
            raise Unsure("external data reference")


def _parse_elst(data: bytes, s: int, e: int, track: Track) -> None:
    version = data[s]
    (count,) = struct.unpack_from(">I", data, s + 4)
    fmt, width = (">QqI", 20) if version == 1 else (">IiI", 12)
    if count > 4 or s + 8 + width * count > e:
        raise Unsure("elst")
    for i in range(count):
        duration, media_time, rate = struct.unpack_from(fmt, data, s + 8 + width * i)
        if rate != 0x10000:
            raise Unsure("edit rate")
        track.edits.append((duration, media_time))


def _parse_stsd(data: bytes, s: int, e: int, track: Track) -> None:
    (count,) = struct.unpack_from(">I", data, s + 4)
    if count != 1:
        raise Unsure("not one sample description")
    pos = s + 8
    size, kind = struct.unpack_from(">I4s", data, pos)
    if size < 16 or pos + size > e or size > MAX_SAMPLE_ENTRY_BYTES:
        raise Unsure("sample entry size")
    track.entry_type = kind
    track.entry = data[pos + 8 : pos + size]
    if struct.unpack_from(">H", track.entry, 6)[0] != 1:
        raise Unsure("data reference index")


# An array typecode of 4 bytes (the C unsigned int almost everywhere).
_U32 = next(code for code in "IL" if array(code).itemsize == 4)


def _table(data: bytes, start: int, count: int, typecode: str) -> Iterator[array[int]]:
    """The `count` big-endian unsigned integers at data[start:], TABLE_CHUNK at a time.

    A table can hold millions of entries: as Python ints in a tuple that is some 40
    bytes each, so it is read a piece at a time, in a compact array of machine words.
    The caller checks that the table lies within its box.
    """
    width = array(typecode).itemsize
    view = memoryview(data)
    for first in range(0, count, TABLE_CHUNK):
        chunk = array(typecode)
        begin = start + width * first
        chunk.frombytes(view[begin : begin + width * min(TABLE_CHUNK, count - first)])
        if sys.byteorder == "little":
            chunk.byteswap()
        yield chunk


def _parse_stts(data: bytes, s: int, e: int, track: Track) -> None:
    (count,) = struct.unpack_from(">I", data, s + 4)
    if count > MAX_SAMPLE_TABLE or s + 8 + 8 * count > e:
        raise Unsure("stts")
    samples = duration = 0
    for chunk in _table(data, s + 8, 2 * count, _U32):
        pairs = memoryview(chunk)  # strided views of it: no copies
        samples += sum(pairs[0::2])
        duration += sum(map(operator.mul, pairs[0::2], pairs[1::2]))
    track.sample_counts = samples
    track.stts_duration = duration


def _parse_stsz(data: bytes, s: int, e: int, track: Track) -> None:
    fixed, count = struct.unpack_from(">II", data, s + 4)
    if count > MAX_SAMPLE_TABLE or (not fixed and s + 12 + 4 * count > e):
        raise Unsure("stsz")
    track.sample_count = count
    if fixed:
        track.data_size, track.first_sample_size = fixed * count, fixed
        return
    track.data_size = sum(sum(chunk) for chunk in _table(data, s + 12, count, _U32))
    if count:
        (track.first_sample_size,) = struct.unpack_from(">I", data, s + 12)


def first_sample(reader: Reader, track: Track) -> bytes:
    """The start of the track's first sample: at most SAMPLE_PEEK_BYTES of it."""
    size = track.first_sample_size
    if track.first_chunk_offset is None or size == 0:
        raise Unsure("first sample")
    return reader.read(track.first_chunk_offset, min(size, SAMPLE_PEEK_BYTES))


def child_box(entry: bytes, offset: int, kind: bytes) -> bytes:
    """The payload of the one child box `kind` of a sample entry, whose fields end at offset."""
    found = None
    movie = Movie()
    for k, s, e in _boxes(movie, entry, offset, len(entry)):
        if k == kind:
            if found is not None:
                raise Unsure(f"second {kind!r}")
            found = entry[s:e]
    if found is None:
        raise Unsure(f"no {kind!r}")
    return found
