"""How much of an MP4/MOV's stored media its edit lists hide, per track.

An edit list says which part of a track's samples plays: a file cut by stream copy off a
keyframe keeps the samples from that keyframe and hides those before the cut; timestamps
made to start at -1 s hide the first second. FFmpeg honours it when decoding and when
copying into MP4/MOV (whose muxer writes an edit list again), but a copy into any other
container, or through the concat demuxer, shows every stored sample. Sans-I/O past the
`Reader`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ffserve.media.mp4.boxes import Movie, Reader, read_movie
from ffserve.media.mp4.codecs import Unsure

EMPTY_EDIT = -1  # media time of an edit that plays nothing (a delay)


def hidden_seconds(path: Path) -> tuple[float, ...] | None:
    """Seconds of stored media each track's edit list hides, in track order (ffprobe's
    stream indexes), or None when the file's boxes are not all understood."""
    with path.open("rb") as file:
        try:
            return hidden_by_track(read_movie(Reader(file)))
        except (Unsure, ValueError, IndexError, KeyError, struct.error, ZeroDivisionError):
            return None


def hidden_by_track(movie: Movie) -> tuple[float, ...]:
    """Stored duration (the sample table's) minus what the edits play, per track."""
    if movie.timescale <= 0:
        raise Unsure("movie timescale")
    hidden = []
    for track in movie.tracks:
        if not track.edits or track.timescale <= 0:
            hidden.append(0.0)
            continue
        stored = track.stts_duration / track.timescale
        played = sum(d for d, media_time in track.edits if media_time != EMPTY_EDIT)
        hidden.append(max(0.0, stored - played / movie.timescale))
    return tuple(hidden)
