"""Reading an MP4/MOV/3GP (ISO BMFF) file's boxes in-process, instead of running ffprobe.

Every ffprobe process costs about 65 ms of CPU just to start here (it links 215 shared
libraries): as much as a whole small FFmpeg job. For the most common container, the
`moov` box says everything `MediaInfo` holds, in well under a millisecond.

The contract is strict: `probe_isobmff` returns exactly what `parse_probe` would make of
ffprobe's output for the same file, in every field, or None, and the caller then runs
ffprobe. The input is untrusted, so anything this module does not fully understand, or
where FFmpeg's answer depends on decoding (HE-AAC found in the bitstream, an SPS sent
in-band that differs from the one in the sample entry), is None rather than a guess.
Video dimensions are taken from the codec's own header (the H.264 SPS, the H.263
picture header), as the decoder reports them, never from the sample entry alone, so a
file cannot slip past the size limits by understating them in the container.

`ffserve.media.mp4.boxes` reads the boxes into a `Movie` of `Track`s, within its bounds on
work and memory; this module turns each track into the `Stream` ffprobe would report: its
codec from the handler and sample entry, a video's size, rotation and frame rate, an audio
track's sample rate and channels, and the profile. It finds the codec headers and
configuration records in the sample entry or the first sample; `ffserve.media.mp4.codecs` reads
them, and its `Unsure` is the one `ffserve.media.mp4.boxes` and this module raise too.

Errors: OSError from opening or reading the file; nothing else.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import attrs

from ffserve.media.mp4.boxes import (
    IDENTITY_MATRIX,
    Reader,
    Track,
    child_box,
    first_sample,
    read_movie,
)
from ffserve.media.mp4.codecs import (
    Unsure,
    alac_config,
    avcc_sps,
    flac_streaminfo,
    h263_picture_size,
    h264_sps,
    mp3_header,
    mp4a_esds,
    opus_channels,
    unescape,
)
from ffserve.media.streams import MediaInfo, Stream

FORMAT_NAME = "mov,mp4,m4a,3gp,3g2,mj2"
INT_MAX = 2**31 - 1

# Sample entry -> ffprobe codec_name, per handler. mp4a is refined by its esds.
VIDEO_CODECS = {b"avc1": "h264", b"s263": "h263"}
AUDIO_CODECS = {
    b"mp4a": "aac",
    b"samr": "amr_nb",
    b"sawb": "amr_wb",
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"alac": "alac",
}
SUBTITLE_CODECS = {b"tx3g": "mov_text"}
HANDLERS = {b"vide": "video", b"soun": "audio", b"sbtl": "subtitle", b"text": "subtitle"}
CODECS_BY_KIND = {"video": VIDEO_CODECS, "audio": AUDIO_CODECS, "subtitle": SUBTITLE_CODECS}


def probe_isobmff(path: Path) -> MediaInfo | None:
    """MediaInfo for an MP4/MOV/3GP, equal to ffprobe's, or None if ffprobe must decide.

    Synchronous and blocking (a few small reads); run it in a worker thread.
    Errors: OSError only.
    """
    with path.open("rb") as file:
        try:
            return _probe(Reader(file))
        except (Unsure, ValueError, IndexError, KeyError, struct.error, ZeroDivisionError):
            return None


def _probe(reader: Reader) -> MediaInfo:
    movie = read_movie(reader)
    if movie.timescale <= 0 or movie.duration <= 0 or not movie.tracks:
        raise Unsure("no movie duration or no tracks")
    streams = tuple(_track_stream(reader, index, track) for index, track in enumerate(movie.tracks))
    # ffprobe's format duration: mvhd duration rescaled to microseconds (rounded), printed
    # with six decimals; the bit rate is the file size over that, truncated.
    micros = (movie.duration * 1_000_000 + movie.timescale // 2) // movie.timescale
    if micros <= 0:
        raise Unsure("zero duration")
    return MediaInfo(
        format_name=FORMAT_NAME,
        duration=float(f"{micros / 1e6:f}"),
        size_bytes=reader.size,
        bit_rate=int(reader.size * 8.0 * 1_000_000 / micros),
        streams=streams,
    )


def _track_stream(reader: Reader, index: int, track: Track) -> Stream:
    kind = HANDLERS.get(track.handler)
    if kind is None:
        raise Unsure(f"handler {track.handler!r}")
    codec = CODECS_BY_KIND[kind].get(track.entry_type)
    if codec is None:
        raise Unsure(f"{kind} sample entry {track.entry_type!r}")
    count = track.sample_count
    if (
        not {b"stsd", b"stts", b"stsz", b"stsc", b"mdhd", b"tkhd"} <= track.seen
        or track.first_chunk_offset is None
        or count == 0
        or count != track.sample_counts
        or track.duration <= 0
    ):
        raise Unsure("incomplete or empty sample table")
    stream = Stream(
        index=index,
        kind=kind,
        codec=codec,
        language=track.language,
        bit_rate=track.data_size * 8 * track.timescale // _stream_duration(track),
    )
    if kind == "video":
        return _video(reader, stream, track)
    if kind == "audio":
        return _audio(reader, stream, track)
    if track.matrix != IDENTITY_MATRIX:
        raise Unsure("subtitle matrix")
    return stream


def _stream_duration(track: Track) -> int:
    """FFmpeg's st->duration when it computes the stream bit rate.

    That is the shorter of mdhd's duration and the sum of the stts, before any edit list
    trims it (checked against ffprobe on files whose one edit trims and shifts the
    track). Empty edits and several edits are left to ffprobe.
    """
    if len(track.edits) > 1 or any(media_time < 0 for _, media_time in track.edits):
        raise Unsure("edit list with several or empty entries")
    duration = min(track.duration, track.stts_duration) if track.stts_duration else track.duration
    if duration <= 0:
        raise Unsure("stream duration")
    return duration


def _video(reader: Reader, stream: Stream, track: Track) -> Stream:
    entry = track.entry
    width, height = struct.unpack_from(">HH", entry, 24)
    if stream.codec == "h264":
        profile, (coded_width, coded_height) = _h264(reader, track)
        # The H.264 decoder's "container cropping": a sample entry size that rounds up
        # to the same macroblocks as the SPS's and is no larger wins (an odd height).
        same_blocks = (-(-width // 16), -(-height // 16)) == (
            -(-coded_width // 16),
            -(-coded_height // 16),
        )
        if same_blocks and width <= coded_width and height <= coded_height:
            coded_width, coded_height = width, height
    else:
        profile, (coded_width, coded_height) = None, h263_picture_size(first_sample(reader, track))
    if (coded_width, coded_height) != (width, height):
        raise Unsure("sample entry and codec header disagree on the size")
    rate = Fraction(track.timescale * track.sample_counts, track.stts_duration)
    if rate <= 0 or rate.numerator > INT_MAX or rate.denominator > INT_MAX:
        raise Unsure("frame rate")
    return attrs.evolve(
        stream,
        profile=profile,
        width=width,
        height=height,
        fps=round(float(rate), 3),
        rotation=_rotation(track.matrix),
    )


def _rotation(matrix: tuple[int, ...]) -> int:
    """ffprobe's side_data rotation for an exact quarter-turn matrix, else Unsure."""
    a, b, u, c, d, v, _x, _y, w = matrix
    if (u, v, w) != (0, 0, 0x40000000) or {a, b, c, d} - {0, 0x10000, -0x10000}:
        raise Unsure("matrix that is not a plain rotation")
    if matrix == IDENTITY_MATRIX:
        return 0
    if abs(a) == abs(b) or a != d or b != -c:
        raise Unsure("matrix that is not a plain rotation")
    # av_display_rotation_get, truncated to an int as ffprobe prints it.
    return int(-math.degrees(math.atan2(b / abs(b or c or 1), a / abs(a or d or 1))))


def _h264(reader: Reader, track: Track) -> tuple[str, tuple[int, int]]:
    """Profile name and cropped size from the avcC's SPS, checked against the first sample."""
    length_size, sps = avcc_sps(child_box(track.entry, 78, b"avcC"))
    for nal in _first_sample_nals(reader, track, length_size):
        if nal[0] & 0x1F in (7, 15) and nal != sps:
            raise Unsure("in-band SPS that differs from the avcC")
    return h264_sps(unescape(sps[1:]))


def _first_sample_nals(reader: Reader, track: Track, length_size: int) -> Iterator[bytes]:
    """The NAL units at the start of the first sample (as much as SAMPLE_PEEK_BYTES holds)."""
    data = first_sample(reader, track)
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0:
            raise Unsure("empty NAL unit")
        nal = data[pos : pos + size]
        if len(nal) < size:
            if nal[0] & 0x1F in (7, 15):
                raise Unsure("SPS beyond the bytes read")
            return
        yield nal
        pos += size


def _audio(reader: Reader, stream: Stream, track: Track) -> Stream:
    if track.matrix != IDENTITY_MATRIX:
        raise Unsure("audio matrix")
    entry = track.entry
    version, _, _, channels, _, _, _, rate = struct.unpack_from(">HH4sHHHHI", entry, 8)
    if version > 1:
        raise Unsure("QuickTime sound description version")
    children = 28 + 16 * version  # version 1 adds four 32-bit packet fields
    sample_rate = rate >> 16
    codec = stream.codec
    profile = None
    if codec == "aac":
        codec, profile, sample_rate, channels = mp4a_esds(_esds(entry, children))
        if codec == "mp3":  # the decoder's first frame header has the last word
            sample_rate, channels = mp3_header(first_sample(reader, track))
    elif codec == "opus":
        sample_rate, channels = 48000, opus_channels(child_box(entry, children, b"dOps"))
    elif codec == "flac":
        sample_rate, channels = flac_streaminfo(child_box(entry, children, b"dfLa"))
    elif codec == "alac":
        sample_rate, channels = alac_config(child_box(entry, children, b"alac"))
    elif codec == "amr_nb":
        sample_rate, channels = 8000, 1
    elif codec == "amr_wb":
        sample_rate, channels = 16000, 1
    else:
        raise Unsure(f"audio codec {codec} not verified against ffprobe")
    if not (sample_rate > 0 and 0 < channels <= 8):
        raise Unsure("sample rate or channels")
    return attrs.evolve(
        stream, codec=codec, profile=profile, sample_rate=sample_rate, channels=channels
    )


def _esds(entry: bytes, offset: int) -> bytes:
    """The esds of an mp4a entry; QuickTime puts it inside a `wave` box."""
    try:
        return child_box(entry, offset, b"esds")
    except Unsure:
        wave = child_box(entry, offset, b"wave")
    return child_box(wave, 0, b"esds")
