"""Files plain FFmpeg handles with the right arguments, end to end (issue 13): Matroska
with no seek index, MPEG program streams whose packets lack timestamps, and files with
streams an operation cannot carry (a font attachment, a timecode track).

Every input is made here with FFmpeg (lavfi sources); every output is probed, and the
pictures compared with what plain FFmpeg shows at the same time, decoded from the start.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ffserve.ffmpeg.ops import Source, transcode
from ffserve.ffmpeg.ops.common import read
from ffserve.service.server import Endpoints
from tests.conftest import Media, StartServer
from tests.e2e.test_operations import FRAME, approx, psnr, session, stages
from tests.helpers import duration, ffmpeg, packet_hash, probe, streams

CLIP = ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6")
TONE = ("-f", "lavfi", "-i", "sine=frequency=440:duration=6")
H264_AAC = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
NO_INDEX = "processing (decoding from the start: the input has no seek index)"


# --- making the files -------------------------------------------------------------------


def _vint(data: bytes | bytearray, at: int, *, marker: bool) -> tuple[int, int]:
    length = 9 - data[at].bit_length()
    value = data[at] if marker else data[at] & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = value << 8 | byte
    return value, length


def unmark_keyframes(path: Path, out: Path) -> None:
    """`path` (FFmpeg's Matroska of SimpleBlocks) with no block marked as a keyframe and
    its Cues blanked to Void: what a recorder that marks no keyframes and writes no index
    leaves. FFmpeg then has nothing to seek by."""
    data = bytearray(path.read_bytes())
    at = sum(_vint(data, 4, marker=False)) + 4  # past the EBML header
    ident, n = _vint(data, at, marker=True)
    size, m = _vint(data, at + n, marker=False)
    at += n + m  # into the Segment
    while at < len(data):
        ident, n = _vint(data, at, marker=True)
        size, m = _vint(data, at + n, marker=False)
        if ident == 0x1C53BB6B:  # Cues -> Void of the same length
            data[at : at + 9] = b"\xec\x01" + (n + m + size - 9).to_bytes(7, "big")
        elif ident == 0x1F43B675:  # Cluster: clear each SimpleBlock's keyframe flag
            child = at + n + m
            while child < at + n + m + size:
                cid, cn = _vint(data, child, marker=True)
                csize, cm = _vint(data, child + cn, marker=False)
                if cid == 0xA3:
                    _, track_length = _vint(data, child + cn + cm, marker=False)
                    data[child + cn + cm + track_length + 2] &= 0x7F
                child += cn + cm + csize
        at += n + m + size
    out.write_bytes(data)


@pytest.fixture(scope="module")
def unindexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 s of 320x240 H.264 + AAC in Matroska without a seek index, two ways."""
    root = tmp_path_factory.mktemp("unindexed")
    # Muxed to a pipe: no Cues, and no Duration either (the muxer cannot go back).
    piped = root / "piped.mkv"
    with piped.open("wb") as f:
        subprocess.run(
            ["ffmpeg", "-v", "error", *CLIP, *TONE, *H264_AAC, "-f", "matroska", "pipe:1"],
            stdout=f,
            check=True,
        )
    indexed = root / "indexed.mkv"
    ffmpeg(*CLIP, *TONE, *H264_AAC, str(indexed))
    unmarked = root / "unmarked.mkv"
    unmark_keyframes(indexed, unmarked)
    return {"piped": piped, "unmarked": unmarked}


def frame_from_start(path: Path, when: float, out: Path) -> Path:
    """The frame shown at `when`, decoded from the start (output seek): always right."""
    ffmpeg("-i", str(path), "-ss", str(when), "-frames:v", "1", "-vf", "format=rgb24", str(out))
    return out


# --- Matroska without a seek index ------------------------------------------------------


def test_the_unindexed_files_are_what_they_claim(unindexed: dict[str, Path]) -> None:
    """Plain FFmpeg's input seek fails on the unmarked file, and ffprobe gives the piped
    one no duration: the two ways the service used to go wrong."""
    seek = ("-ss", "3", "-i", str(unindexed["unmarked"]), "-frames:v", "1")
    result = subprocess.run(
        ["ffmpeg", "-v", "warning", *seek, "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "could not seek to position" in result.stderr
    assert "duration" not in probe(unindexed["piped"])["format"]


@pytest.mark.parametrize("kind", ["piped", "unmarked"])
async def test_seeking_operations_decode_an_unindexed_matroska_from_the_start(
    server: Endpoints, unindexed: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    source = unindexed[kind]
    async with session(server, tmp_path, 90) as s:
        # One thumbnail at 3 s: the frame plain FFmpeg shows there.
        output, info, result = await s.ok("thumbnail", source, {"timestamp": 3, "format": "png"})
        assert NO_INDEX in stages(result)
        assert psnr(output, frame_from_start(source, 3, tmp_path / "at3.png")) > 40

        # Three spread over the whole 6 s: at about 1, 3 and 5 s (a sixth of the duration,
        # which only the audio's priming makes other than 6 s), each its own frame.
        result = await s.run("thumbnail", source, {"count": 3, "format": "png"})
        assert result.final["type"] == "completed", result.final
        assert len(result.outputs) == 3
        for n, when in enumerate((1, 3, 5)):
            picture = result.save(tmp_path, n)
            near = [when - FRAME, when, when + FRAME, when + 2 * FRAME]
            references = [frame_from_start(source, t, tmp_path / f"ref{t}.png") for t in near]
            assert max(psnr(picture, reference) for reference in references) > 40, when

        # trim 2-4 s: two seconds of both streams, starting with the frame at 2 s.
        output, info, result = await s.ok("trim", source, {"start_time": 2, "end_time": 4})
        assert NO_INDEX in stages(result)
        assert len(streams(info, "video")) == 1 and len(streams(info, "audio")) == 1
        approx(duration(info), 2.0, 2 * FRAME)
        first = frame_from_start(output, 0, tmp_path / "trim0.png")
        assert psnr(first, frame_from_start(source, 2, tmp_path / "at2.png")) > 30

        # gif of 1 s from 2 s.
        output, info, result = await s.ok("gif", source, {"start_time": 2, "duration": 1})
        assert NO_INDEX in stages(result)
        approx(duration(info), 1.0, 2 * FRAME)

        # speed needs the duration the piped file does not state: 6 s at 2x is 3 s.
        _, info, _ = await s.ok("speed", source, {"speed_factor": 2})
        approx(duration(info), 3.0, 3 * FRAME)


async def test_an_indexed_matroska_is_still_seeked(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    """The fallback is for unindexed files only: an ordinary MKV keeps the fast input seek."""
    mkv = tmp_path / "indexed.mkv"
    ffmpeg("-i", str(media.long), "-c", "copy", str(mkv))
    async with session(server, tmp_path, 30) as s:
        _, _, result = await s.ok("trim", mkv, {"start_time": 2, "end_time": 3})
        assert stages(result) == {"queued", "processing"}


# --- MPEG program streams whose packets lack timestamps ---------------------------------


def program_stream(directory: Path, muxer: str) -> Path:
    """3 s of MPEG-2 video with B-frames and MP2 audio, as a DVD (vob) or SVCD program
    stream. With B-frames only some PES headers carry a pts: some packets have none."""
    source = directory / f"dvd.{'vob' if muxer == 'vob' else 'mpg'}"
    size = "352x288" if muxer == "vob" else "480x576"
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration=3"),
        *("-f", "lavfi", "-i", "sine=duration=3:sample_rate=44100"),
        *("-c:v", "mpeg2video", "-bf", "2", "-c:a", "mp2", "-f", muxer, str(source)),
    )
    packets = ("-select_streams", "v", "-show_entries", "packet=pts", "-of", "csv=p=0")
    pts = subprocess.run(
        ["ffprobe", "-v", "error", *packets, str(source)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "N/A" in pts
    return source


@pytest.mark.parametrize("muxer", ["vob", "svcd"])
async def test_convert_copies_a_program_stream_whose_packets_lack_timestamps(
    server: Endpoints, tmp_path: Path, muxer: str
) -> None:
    source = program_stream(tmp_path, muxer)
    async with session(server, tmp_path, 60) as s:
        options = {"target_format": "mkv", "stream_copy": True}
        output, info, result = await s.ok("convert", source, options)
        (video,) = streams(info, "video")
        assert video["codec_name"] == "mpeg2video"
        assert packet_hash(output) == packet_hash(source)  # copied, not re-encoded
        assert len(streams(info, "audio")) == 1
        approx(duration(info), 3.0, 3 * FRAME)
        assert not any("lacks timestamps" in stage for stage in stages(result))


# --- streams an operation cannot carry --------------------------------------------------


def font() -> Path:
    found = sorted(Path("/usr/share/fonts").rglob("*.ttf"))
    if not found:
        pytest.skip("no TrueType font on this machine to attach")
    return found[0]


@pytest.fixture
def extra_streams(tmp_path: Path) -> dict[str, Path]:
    """4 s of H.264 + AAC with a font attachment (MKV) and with a timecode track (MOV)."""
    attached = tmp_path / "attached.mkv"
    clip = ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4")
    tone = ("-f", "lavfi", "-i", "sine=duration=4")
    ffmpeg(
        *clip,
        *tone,
        *H264_AAC,
        *("-attach", str(font()), "-metadata:s:t", "mimetype=application/x-truetype-font"),
        str(attached),
    )
    timecoded = tmp_path / "timecoded.mov"
    ffmpeg(*clip, *tone, *H264_AAC, "-timecode", "01:00:00:00", str(timecoded))
    kinds = {s["codec_type"] for s in probe(attached)["streams"]}
    assert "attachment" in kinds
    assert "data" in {s["codec_type"] for s in probe(timecoded)["streams"]}
    return {"attached": attached, "timecoded": timecoded}


@pytest.mark.parametrize("kind", ["attached", "timecoded"])
async def test_retiming_keeps_only_audio_and_video_retimed(
    server: Endpoints, extra_streams: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    source = extra_streams[kind]
    async with session(server, tmp_path, 60) as s:
        for factor in (2, 0.5):
            _, info, _ = await s.ok("speed", source, {"speed_factor": factor})
            kinds = sorted(stream["codec_type"] for stream in info["streams"])
            assert kinds == ["audio", "video"], kinds
            approx(duration(info), 4.0 / factor, 3 * FRAME)
            for stream in info["streams"]:
                approx(float(stream["duration"]), 4.0 / factor, 3 * FRAME)
        _, info, _ = await s.ok("trim", source, {"start_time": 1, "end_time": 2.5})
        assert sorted(stream["codec_type"] for stream in info["streams"]) == ["audio", "video"]
        approx(duration(info), 1.5, 2 * FRAME)


async def test_convert_re_encodes_as_a_last_resort(
    server: Endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where generated timestamps are not enough, FFmpeg's 'unknown timestamp' turns the
    job to the plan's re-encode, in the same job, named in the stage. (Shown by taking
    `-fflags +genpts` away, which leaves the copy failing as it did before it.)"""

    def without_genpts(source: Source, **window: Any) -> list[str]:
        args = read(source, **window)
        return args[2:] if args[:2] == ["-fflags", "+genpts"] else args

    monkeypatch.setattr(transcode, "read", without_genpts)
    source = program_stream(tmp_path, "vob")
    async with session(server, tmp_path, 60) as s:
        options = {"target_format": "mkv", "stream_copy": True}
        _, info, result = await s.ok("convert", source, options)
        assert "processing (re-encoding: the input lacks timestamps)" in stages(result)
        (video,) = streams(info, "video")
        assert video["codec_name"] == "h264"
        approx(duration(info), 3.0, 3 * FRAME)


async def test_a_measured_duration_counts_against_the_limit(
    start_server: StartServer, unindexed: dict[str, Path], tmp_path: Path
) -> None:
    """A file that states no duration used to pass the duration limit unchecked."""
    server = await start_server(limits={"max_duration_s": 3})
    async with session(server, tmp_path, 30) as s:
        error = await s.refused("extract_audio", unindexed["piped"], {"format": "wav"})
        assert error["code"] == "TOO_LARGE"
        assert "the limit is 3 s" in error["message"]
