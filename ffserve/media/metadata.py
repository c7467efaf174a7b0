"""The metadata a client is told about a file: v1's `output_metadata`, and `probe`'s answer."""

from __future__ import annotations

from typing import Any

from ffserve.media.streams import MediaInfo


def output_metadata(info: MediaInfo, container: str) -> dict[str, Any]:
    """The `completed.output_metadata` of protocol v1."""
    video, audio = info.video, info.audio
    size = video.display_size if video else None
    return {
        "format": container,
        "duration": round(info.duration, 3) if info.duration else None,
        "size_bytes": info.size_bytes,
        "codecs": [s.codec for s in info.streams if not s.is_cover_art],
        "video_codec": video.codec if video else None,
        "audio_codec": audio.codec if audio else None,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "bitrate": info.bit_rate,
        "fps": video.fps if video else None,
        "sample_rate": audio.sample_rate if audio else None,
        "channels": audio.channels if audio else None,
    }


def full_metadata(info: MediaInfo) -> dict[str, Any]:
    """Everything the `probe` operation reports: container, timing, every stream."""
    return {
        "format": info.demuxer,
        "format_name": info.format_name,
        "duration": round(info.duration, 3) if info.duration else None,
        "size_bytes": info.size_bytes,
        "bitrate": info.bit_rate,
        "streams": [
            {
                "index": s.index,
                "type": s.kind,
                "cover_art": s.is_cover_art,
                "codec": s.codec,
                "profile": s.profile,
                "width": s.width,
                "height": s.height,
                "rotation": s.rotation,
                "fps": s.fps,
                "sample_rate": s.sample_rate,
                "channels": s.channels,
                "language": s.language,
                "bitrate": s.bit_rate,
            }
            for s in info.streams
        ],
    }
