"""Whether a Matroska file has a seek index: files made by FFmpeg, then broken ones."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from ffserve.media import matroska
from ffserve.media.matroska import NotMatroska, has_cues
from tests.helpers import ffmpeg

CLIP = ("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-c:v", "libx264")


def answer(data: bytes) -> bool:
    return has_cues(io.BytesIO(data), len(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("mkv")
    made = {}
    for name, extra in {
        "file.mkv": (),
        "file.webm": ("-c:v", "libvpx", "-deadline", "realtime"),
        "front.mkv": ("-cues_to_front", "1"),  # Cues before the Clusters
        "spare.mkv": ("-reserve_index_space", "1024"),  # Cues in space left for them
    }.items():
        ffmpeg(*CLIP, *extra, str(root / name))
        made[name] = (root / name).read_bytes()
    # Muxed to a pipe, the muxer cannot go back to write an index.
    made["pipe.mkv"] = subprocess.run(
        ["ffmpeg", "-v", "error", *CLIP, "-f", "matroska", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    return made


@pytest.mark.parametrize("name", ["file.mkv", "file.webm", "front.mkv", "spare.mkv"])
def test_files_written_to_disk_have_cues(files: dict[str, bytes], name: str) -> None:
    assert answer(files[name])


def test_a_file_muxed_to_a_pipe_has_none(files: dict[str, bytes]) -> None:
    assert not answer(files["pipe.mkv"])


def test_cues_blanked_are_none(files: dict[str, bytes]) -> None:
    """The SeekHead still points at the Cues' place, where a Void now stands."""
    data = files["file.mkv"]
    at = data.rindex(bytes.fromhex("1C53BB6B"))
    blanked = data[:at] + b"\xec" + data[at + 1 :]  # an ID FFmpeg does not take for Cues
    assert not answer(blanked)


def test_an_open_ended_cluster_ends_the_search(files: dict[str, bytes]) -> None:
    """A live recording's Cluster of unknown size: nothing after it can be found."""
    data = bytearray(files["pipe.mkv"])
    at = data.index(bytes.fromhex("1F43B675")) + 4
    width = 9 - data[at].bit_length()
    data[at : at + width] = bytes([0xFF >> (width - 1) | 0x80 >> (width - 1)]) + b"\xff" * (
        width - 1
    )
    assert not answer(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 20, 40, 100])
def test_cut_short_is_no_index(files: dict[str, bytes], cut: int) -> None:
    data = files["file.mkv"][:cut]
    try:
        assert not answer(data)
    except NotMatroska:
        assert cut < 40  # only before the Segment has begun


@pytest.mark.parametrize(
    "data", [b"RIFF\x00\x00\x00\x00WAVE", b"\x1a\x45\xdf\xa3\x80\x42\x86\x81\x01"]
)
def test_not_matroska(data: bytes) -> None:
    with pytest.raises(NotMatroska):
        answer(data)


def test_the_walk_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Segment of countless tiny elements is given up on (answered: no index)."""
    monkeypatch.setattr(matroska, "MAX_ELEMENTS", 50)
    void = b"\xec\x80"  # an empty Void element: two bytes each
    data = bytes.fromhex("1A45DFA3") + b"\x80" + bytes.fromhex("18538067") + b"\x01" + b"\xff" * 7
    cues = bytes.fromhex("1C53BB6B") + b"\x80"
    assert answer(data + void * 10 + cues)
    assert not answer(data + void * 100 + cues)


def test_real_file_on_disk(tmp_path: Path, files: dict[str, bytes]) -> None:
    path = tmp_path / "a.mkv"
    path.write_bytes(files["file.mkv"])
    with path.open("rb") as f:
        assert has_cues(f, path.stat().st_size)
