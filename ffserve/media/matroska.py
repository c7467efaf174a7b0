"""Whether a Matroska/WebM file carries a seek index (Cues), read in-process.

FFmpeg seeks a Matroska input by its Cues; without them (a file muxed to a pipe, a live
recording cut short) it can only seek to keyframes it has already read, and when the
blocks are not marked as keyframes either, an input seek (`-ss` before `-i`) fails and
FFmpeg reads on from the end: no frames at all. ffprobe does not say whether a file has
Cues, so this walks the top-level elements of the Segment: the SeekHead's entry for the
Cues (checked where it points), or a Cues element met on the way. Bounded: it reads a
few bytes per element and stops after `MAX_ELEMENTS`, answering "no index" (the safe
answer: decoding from the start is slower but always right).
"""

from __future__ import annotations

from typing import BinaryIO

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
SEEK = 0x4DBB
SEEK_ID = 0x53AB
SEEK_POSITION = 0x53AC
CUES = 0x1C53BB6B
CLUSTER = 0x1F43B675

MAX_ELEMENTS = 100_000
MAX_SEEK_HEAD_BYTES = 64 * 1024
UNKNOWN = -1  # an element whose size the muxer left open (live streams)


class NotMatroska(ValueError):
    pass


def _vint(f: BinaryIO, *, keep_marker: bool) -> tuple[int, int]:
    """One EBML variable-length integer: (value, length). An ID keeps its marker bit; a
    size of all ones is UNKNOWN."""
    first = f.read(1)
    if not first:
        raise EOFError
    length = 1
    mask = 0x80
    while length <= 8 and not first[0] & mask:
        length += 1
        mask >>= 1
    if length > 8:
        raise NotMatroska("invalid EBML length")
    rest = f.read(length - 1)
    if len(rest) != length - 1:
        raise EOFError
    value = first[0] if keep_marker else first[0] & (mask - 1)
    for byte in rest:
        value = value << 8 | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return UNKNOWN, length
    return value, length


def _element(f: BinaryIO) -> tuple[int, int]:
    """(id, data size) of the element at the current position, which is left at its data."""
    ident, _ = _vint(f, keep_marker=True)
    size, _ = _vint(f, keep_marker=False)
    return ident, size


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if len(data) <= 8 else -1


def _seek_head_points_to_cues(f: BinaryIO, size: int) -> list[int]:
    """The Cues positions (relative to the segment's data) a SeekHead lists."""
    end = f.tell() + min(size, MAX_SEEK_HEAD_BYTES)
    positions = []
    while f.tell() < end:
        ident, length = _element(f)
        if length == UNKNOWN:
            break
        if ident != SEEK:
            f.seek(length, 1)
            continue
        stop = f.tell() + length
        seek_id, position = None, None
        while f.tell() < stop:
            child, child_length = _element(f)
            if child_length == UNKNOWN or child_length > 16:
                break
            data = f.read(child_length)
            if child == SEEK_ID:
                seek_id = _uint(data)
            elif child == SEEK_POSITION:
                position = _uint(data)
        f.seek(stop)
        if seek_id == CUES and position is not None and position >= 0:
            positions.append(position)
    return positions


def has_cues(f: BinaryIO, file_size: int) -> bool:
    """True when the Segment has a Cues element FFmpeg can find. Errors: NotMatroska when
    the file does not begin as one; a truncated file answers False."""
    try:
        ident, size = _element(f)
        if ident != EBML_HEADER or size == UNKNOWN:
            raise NotMatroska("no EBML header")
        f.seek(size, 1)
        ident, size = _element(f)
        if ident != SEGMENT:
            raise NotMatroska("no Segment")
        data_start = f.tell()
        end = file_size if size == UNKNOWN else min(file_size, data_start + size)
        for _ in range(MAX_ELEMENTS):
            if f.tell() >= end:
                return False
            ident, size = _element(f)
            if ident == CUES:
                return True
            if size == UNKNOWN:
                return False  # an open-ended Cluster: nothing past it can be found
            after = f.tell() + size
            if ident == SEEK_HEAD:
                for position in _seek_head_points_to_cues(f, size):
                    f.seek(data_start + position)
                    if data_start + position < end and _element(f)[0] == CUES:
                        return True
            f.seek(after)
        return False
    except EOFError:
        return False
