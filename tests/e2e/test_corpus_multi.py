"""The multi-file operations (issue 3) on the real-media corpus.

- probe of every file matches ffprobe;
- thumbnail sets of every video file;
- concat of corpus videos that differ in codec, size, rate and audio;
- subtitles: an MKV built here from a corpus video and the corpus SRT, ASS and WebVTT
  files; every stream extracted in every format keeps its cue text, and burning works.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.helpers import (
    CORPUS,
    caption_area_difference,
    connect,
    duration,
    ffmpeg,
    probe,
    run_uploads,
    streams,
)

if not CORPUS.is_dir():
    pytest.skip(f"no media corpus at {CORPUS}", allow_module_level=True)

pytestmark = pytest.mark.corpus

NOT_MEDIA = {"README.md", "SHA256SUMS", "SOURCES.tsv"}
FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file() and p.name not in NOT_MEDIA)
SUBTITLES = ["subrip_basic.srt", "ass_basic.ass", "webvtt_basic.vtt"]
VIDEOS = [
    name
    for name in FILES
    if name not in SUBTITLES
    and name != "image_451x300.png"
    and streams(probe(CORPUS / name), "video")
]


@pytest.mark.parametrize("name", FILES)
async def test_probe_matches_ffprobe(server: Endpoints, name: str) -> None:
    path = CORPUS / name
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run("probe", path)
    assert result.final["type"] == "completed", result.final
    meta = result.final["output_metadata"]
    truth = probe(path)
    assert meta["format_name"] == truth["format"]["format_name"]
    assert meta["size_bytes"] == path.stat().st_size
    if "duration" in truth["format"]:
        assert meta["duration"] == pytest.approx(duration(truth), abs=0.001)
    assert len(meta["streams"]) == len(truth["streams"])
    for ours, theirs in zip(meta["streams"], truth["streams"], strict=True):
        assert ours["type"] == theirs["codec_type"]
        assert ours["codec"] == theirs.get("codec_name", "unknown")
        assert ours["width"] == theirs.get("width")
        assert ours["height"] == theirs.get("height")
        assert ours["channels"] == theirs.get("channels")
        if "sample_rate" in theirs:
            assert ours["sample_rate"] == int(theirs["sample_rate"])
        assert ours["language"] == theirs.get("tags", {}).get("language")


@pytest.mark.parametrize("name", VIDEOS)
async def test_thumbnail_set(server: Endpoints, name: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run("thumbnail", CORPUS / name, {"count": 4, "width": 96})
    assert result.final["type"] == "completed", result.final
    assert len(result.outputs) == 4
    for n, (header, data) in enumerate(result.outputs):
        assert (header["index"], header["count"]) == (n, 4)
        path = tmp_path / header["filename"]
        path.write_bytes(data)
        (video,) = streams(probe(path), "video")
        assert video["width"] == 96


CONCAT_SETS = {
    "mp4+webm+ogv": [
        "h264_aac_mono_560x320.mp4",
        "vp8_vorbis_560x320.webm",
        "theora_vorbis_560x320.ogv",
    ],
    "3gp+ts(no audio)+avi(no audio)+odd mov": [
        "h263_amrnb_cif.3gp",
        "mpeg2_540p_noaudio.ts",
        "mpeg4asp_520x380_noaudio.avi",
        "h264_aac_640x465_oddheight.mov",
    ],
    "5.1 + vfr phone": ["h264_aac51_720p.mp4", "h264_aac_phone_1080p_vfr.mp4"],
    "same file twice (copy)": ["h264_aac_mono_560x320.mov", "h264_aac_mono_560x320.mov"],
}


@pytest.mark.parametrize("names", list(CONCAT_SETS.values()), ids=list(CONCAT_SETS))
async def test_concat(server: Endpoints, names: list[str], tmp_path: Path) -> None:
    paths = [CORPUS / n for n in names]
    with trio.fail_after(120):
        async with connect(server.url) as client:
            result = await run_uploads(client, "concat", {"file_count": len(paths)}, paths, "c1")
    assert result.final["type"] == "completed", result.final
    out = probe(result.save(tmp_path))
    (video,) = streams(out, "video")
    first = streams(probe(paths[0]), "video")[0]
    assert (video["width"], video["height"]) == (first["width"] // 2 * 2, first["height"] // 2 * 2)
    assert len(streams(out, "audio")) == 1
    expected = sum(duration(probe(p)) for p in paths)
    assert duration(out) == pytest.approx(expected, abs=0.1 * len(paths))


@pytest.fixture(scope="module")
def subtitled_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus_subs") / "with_subs.mkv"
    video = CORPUS / "h264_aac_mono_560x320.mp4"
    inputs = [video, *(CORPUS / n for n in SUBTITLES)]
    args = [x for p in inputs for x in ("-i", str(p))]
    maps = [x for n in range(len(inputs)) for x in ("-map", str(n))]
    ffmpeg(*args, *maps, "-c", "copy", "-c:s", "copy", str(out))
    return out


def cue_texts(text: str) -> list[str]:
    """The words of every cue, without markup, timing, styles or numbering."""
    words = []
    for line in text.splitlines():
        if line.startswith("Dialogue:"):
            line = line.split(",", 9)[9]
        elif (
            "-->" in line
            or line.strip().isdigit()
            or line.startswith(
                (
                    "WEBVTT",
                    "[",
                    "Style:",
                    "Format:",
                    ";",
                    "Title:",
                    "ScriptType",
                    "PlayRes",
                    "WrapStyle",
                    "ScaledBorder",
                    "YCbCr",
                    "Collisions",
                )
            )
            or ":" in line[:12]
        ):
            continue
        line = re.sub(r"\{[^}]*\}|<[^>]*>", "", line).replace("\\N", " ")
        words += line.split()
    return words


@pytest.mark.parametrize("index", range(len(SUBTITLES)), ids=SUBTITLES)
@pytest.mark.parametrize("fmt", ["srt", "ass", "vtt"])
async def test_extract_corpus_subtitles(
    server: Endpoints, subtitled_corpus: Path, index: int, fmt: str, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            result = await client.run(
                "extract_subtitles", subtitled_corpus, {"subtitle_index": index, "format": fmt}
            )
    assert result.final["type"] == "completed", result.final
    text = result.outputs[0][1].decode("utf-8")
    # The reference: the same stream converted by plain FFmpeg to the same format.
    reference = tmp_path / f"ref.{fmt}"
    ffmpeg("-i", str(subtitled_corpus), "-copyts", "-map", f"0:s:{index}", str(reference))
    assert cue_texts(text) == cue_texts(reference.read_text(encoding="utf-8"))
    assert cue_texts(text), "no cue text survived"
    source_words = cue_texts((CORPUS / SUBTITLES[index]).read_text(encoding="utf-8"))
    assert cue_texts(text)[:3] == source_words[:3]
    if fmt == "ass" and SUBTITLES[index].endswith(".ass"):
        assert "Style: Default,Arial,20" in text  # the corpus file's style survives


async def test_burn_corpus_subtitles(
    server: Endpoints, subtitled_corpus: Path, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run("burn_subtitles", subtitled_corpus, {"subtitle_index": 1})
    assert result.final["type"] == "completed", result.final
    out = result.save(tmp_path)
    info = probe(out)
    assert streams(info, "subtitle") == []
    # The picture's length, not the container's (the subtitle streams run to 60 s).
    video_length = duration(probe(CORPUS / "h264_aac_mono_560x320.mp4"))
    assert duration(info) == pytest.approx(video_length, abs=0.1)

    # ass_basic.ass shows its first line from 0.76 s to 3.45 s.
    assert caption_area_difference(out, subtitled_corpus, 2.0) > 2.0
