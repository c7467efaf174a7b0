"""Issue 3: multi-input and multi-output operations end to end, outputs probed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import (
    CORPUS,
    caption_area_difference,
    connect,
    duration,
    ffmpeg,
    gray_frame,
    pixel_difference,
    probe,
    run_uploads,
    streams,
)


def frame_count(path: Path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


@pytest.fixture(scope="session")
def variants(media: Media, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips that differ from media.clip in size, rate, codecs and audio."""
    root = tmp_path_factory.mktemp("variants")
    out = {"webm": root / "b.webm", "noaudio": root / "c.mp4", "mono48k": root / "d.mov"}
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30:duration=1.5",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=880:duration=1.5:sample_rate=48000",
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-c:a",
        "libvorbis",
        "-shortest",
        str(out["webm"]),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=480x480:rate=24:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(out["noaudio"]),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1:sample_rate=48000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(out["mono48k"]),
    )
    return out


async def test_concat_identical_inputs_is_stream_copy(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await run_uploads(client, "concat", {"file_count": 3}, [media.clip] * 3)
    assert result.final["type"] == "completed", result.final
    assert any(
        "stream copy" in m.get("stage", "") for m in result.messages if m["type"] == "progress"
    )
    out = probe(result.save(tmp_path))
    assert len(streams(out, "video")) == 1 and len(streams(out, "audio")) == 1
    assert duration(out) == pytest.approx(3 * duration(probe(media.clip)), abs=0.1)
    assert frame_count(tmp_path / result.outputs[0][0]["filename"]) == 150


async def test_concat_mixed_inputs_are_normalised(
    server: Endpoints, media: Media, variants: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [media.clip, variants["webm"], variants["noaudio"], variants["mono48k"]]
    with trio.fail_after(90):
        async with connect(server.url) as client:
            result = await run_uploads(client, "concat", {"file_count": 4}, inputs)
    assert result.final["type"] == "completed", result.final
    out = probe(result.save(tmp_path))
    (video,) = streams(out, "video")
    (audio,) = streams(out, "audio")
    assert (video["width"], video["height"]) == (640, 360)  # the first input's size
    assert audio["sample_rate"] == "48000"
    expected = sum(duration(probe(p)) for p in inputs)
    # Within about a frame per joint.
    assert duration(out) == pytest.approx(expected, abs=0.05 * len(inputs))
    assert float(audio.get("duration", duration(out))) == pytest.approx(expected, abs=0.2)


async def test_concat_upload_count_errors(start_server: Any, media: Media) -> None:
    server = await start_server(jobs={"input_timeout_s": 1.0})
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await run_uploads(client, "concat", {"file_count": 2}, [media.clip])
            assert result.final["code"] == "TIMEOUT"
            result = await run_uploads(
                client, "concat", {"file_count": 2}, [media.clip, media.clip], job_id="m2"
            )
            assert result.final["type"] == "completed"
            await client.upload("m2", media.clip)  # after the job ended
            late = await client.recv_json()
            assert late["type"] == "error" and late["code"] == "INVALID_BINARY"
            assert late["job_id"] == "m2"
            await client.send(
                {
                    "type": "start_job",
                    "job_id": "m3",
                    "operation": "concat",
                    "input": {"source": "upload"},
                    "options": {"file_count": 1},
                }
            )
            bad = await client.recv_json()
            assert bad["code"] == "VALIDATION_ERROR"
            assert bad["details"]["field"] == "$.options.file_count"


async def test_upload_after_start_is_refused(server: Endpoints, media: Media) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("t1", "trim", {"start_time": 0, "end_time": 1})
            await client.upload("t1", media.clip)
            await client.upload("t1", media.clip)  # one upload too many
            messages = []
            while not any(
                m["type"] in ("completed", "error")
                and m.get("job_id") == "t1"
                and m.get("code") != "INVALID_BINARY"
                for m in messages
            ):
                message = await client.recv()
                if isinstance(message, dict):
                    messages.append(message)
            extra = [m for m in messages if m.get("code") == "INVALID_BINARY"]
            assert extra and extra[0]["job_id"] == "t1"
            assert messages[-1]["type"] == "completed"


async def test_thumbnail_set_spreads_across_the_duration(
    server: Endpoints, media: Media, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run(
                "thumbnail", media.long, {"count": 5, "format": "png", "width": 160}
            )
    completed = result.final
    assert completed["type"] == "completed", completed
    assert len(completed["outputs"]) == 5 and len(result.outputs) == 5
    headers = [h for h, _ in result.outputs]
    assert [h["index"] for h in headers] == list(range(5))
    assert all(h["count"] == 5 for h in headers)
    assert [h["filename"] for h in headers] == [o["filename"] for o in completed["outputs"]]
    for (header, data), meta in zip(result.outputs, completed["outputs"], strict=True):
        path = tmp_path / header["filename"]
        path.write_bytes(data)
        (video,) = streams(probe(path), "video")
        assert (video["width"], video["height"]) == (160, 120)
        assert meta["size_bytes"] == len(data)
    # testsrc2 draws a moving picture: images from different times differ.
    assert len({data for _, data in result.outputs}) == 5
    # The spread covers the whole clip: the last image matches a frame near the end.
    last = tmp_path / "last.png"
    ffmpeg("-ss", "5.4", "-i", str(media.long), "-frames:v", "1", "-vf", "scale=160:120", str(last))
    first = tmp_path / "first.png"
    ffmpeg(
        "-ss", "0.6", "-i", str(media.long), "-frames:v", "1", "-vf", "scale=160:120", str(first)
    )
    assert _difference(tmp_path / headers[-1]["filename"], last) < _difference(
        tmp_path / headers[-1]["filename"], first
    )


def _difference(a: Path, b: Path) -> float:
    """Mean absolute pixel difference of two images (0-255)."""
    return pixel_difference(gray_frame(a), gray_frame(b))


@pytest.fixture(scope="session")
def subtitled(media: Media, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MKV with the long clip, an SRT stream and an ASS stream (ours, with a style)."""
    root = tmp_path_factory.mktemp("subs")
    srt = root / "a.srt"
    srt.write_text(
        "1\n00:00:00,500 --> 00:00:03,000\nHello, «wörld»: one\n\n"
        "2\n00:00:03,500 --> 00:00:05,500\nSecond cue\n",
        encoding="utf-8",
    )
    ass = root / "b.ass"
    ass.write_text(
        "[Script Info]\nScriptType: v4.00+\nPlayResX: 320\nPlayResY: 240\n\n[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
        "Style: Loud,DejaVu Sans,28,&H0000FFFF,&H000000FF,&H00000000,&H00000000,1,0,0,0,"
        "100,100,0,0,1,2,0,2,10,10,10,1\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:00.50,0:00:05.50,Loud,,0,0,0,,Styled line\n",
        encoding="utf-8",
    )
    out = root / "subtitled.mkv"
    ffmpeg(
        "-i",
        str(media.long),
        "-i",
        str(srt),
        "-i",
        str(ass),
        "-copyts",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-c:v",
        "copy",
        "-c:a",
        "copy",
        "-c:s",
        "copy",
        str(out),
    )
    return out


def cue_starts(path: Path, index: int) -> list[float]:
    """Start times of the cues of subtitle stream `index`, as stored in the file."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            f"s:{index}",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return [float(line) for line in out.stdout.split()]


def clock(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    hours, minutes, secs = ms // 3600000, ms // 60000 % 60, ms // 1000 % 60
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms % 1000:03d}"


@pytest.mark.parametrize(
    ("index", "fmt", "needle"),
    [
        (0, "srt", "Hello, «wörld»: one"),
        (0, "vtt", "Hello, «wörld»: one"),
        (1, "ass", "Style: Loud,DejaVu Sans,28"),
    ],
)
async def test_extract_subtitles(
    server: Endpoints, subtitled: Path, tmp_path: Path, index: int, fmt: str, needle: str
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run(
                "extract_subtitles", subtitled, {"subtitle_index": index, "format": fmt}
            )
    assert result.final["type"] == "completed", result.final
    text = result.outputs[0][1].decode("utf-8")
    assert needle in text
    starts = cue_starts(subtitled, index)
    if fmt == "srt":
        assert [clock(s, ",") for s in starts] == [
            line.split(" --> ")[0] for line in text.splitlines() if " --> " in line
        ]
        assert "Second cue" in text
    elif fmt == "vtt":
        assert text.startswith("WEBVTT")
        assert clock(starts[1], ".")[3:] in text and "Second cue" in text
    else:
        assert "Dialogue:" in text and "Styled line" in text


async def test_extract_subtitles_missing_stream(
    server: Endpoints, subtitled: Path, media: Media
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run("extract_subtitles", subtitled, {"subtitle_index": 2})
            assert result.final["code"] == "NO_SUBTITLE_STREAM"
            assert result.final["details"]["subtitle_streams"] == 2
            result = await client.run("extract_subtitles", media.clip, {}, job_id="j2")
            assert result.final["code"] == "NO_SUBTITLE_STREAM"


async def test_burn_own_subtitle_stream(
    server: Endpoints, subtitled: Path, media: Media, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run("burn_subtitles", subtitled, {"subtitle_index": 0})
    assert result.final["type"] == "completed", result.final
    out = result.save(tmp_path)
    info = probe(out)
    assert streams(info, "subtitle") == []
    assert duration(info) == pytest.approx(duration(probe(media.long)), abs=0.1)
    assert caption_area_difference(out, media.long, 1.0) > 2.0  # text is drawn
    assert caption_area_difference(out, media.long, 3.2) < 1.0  # between cues: nothing


@pytest.mark.parametrize("name", ["subrip_basic.srt", "ass_basic.ass", "webvtt_basic.vtt"])
async def test_burn_uploaded_subtitle_file(
    server: Endpoints, media: Media, tmp_path: Path, name: str
) -> None:
    source = CORPUS / name
    if not source.exists():
        pytest.skip("corpus not available")
    # A name full of quotes, colons, commas and non-ASCII must not matter.
    awkward = tmp_path / f"it's: a, [test] ünïcode;'{source.suffix}"
    awkward.write_bytes(source.read_bytes())
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await run_uploads(
                client, "burn_subtitles", {"subtitle_upload": True}, [media.long, awkward]
            )
    assert result.final["type"] == "completed", result.final
    out = result.save(tmp_path)
    assert streams(probe(out), "subtitle") == []
    assert caption_area_difference(out, media.long, 2.0) > 2.0


async def test_burn_rejects_a_subtitle_upload_that_is_not_one(
    server: Endpoints, media: Media
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await run_uploads(
                client, "burn_subtitles", {"subtitle_upload": True}, [media.clip, media.tone]
            )
    assert result.final["code"] == "INVALID_MEDIA"


async def test_probe_matches_ffprobe(server: Endpoints, subtitled: Path) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run("probe", subtitled)
    completed = result.final
    assert completed["type"] == "completed" and completed["delivery_method"] == "none"
    assert result.outputs == []
    meta = completed["output_metadata"]
    truth = probe(subtitled)
    assert meta["format"] == "matroska"
    assert meta["duration"] == pytest.approx(duration(truth), abs=0.001)
    assert [s["codec"] for s in meta["streams"]] == [s["codec_name"] for s in truth["streams"]]
    assert [s["type"] for s in meta["streams"]] == [s["codec_type"] for s in truth["streams"]]
    video = meta["streams"][0]
    assert (video["width"], video["height"], video["fps"]) == (320, 240, 25.0)
    json.dumps(meta)  # plain JSON all the way down
