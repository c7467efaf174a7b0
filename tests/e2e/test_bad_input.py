"""Bad input over real sockets: each gets an `error` with its code, naming the job where
there is one and no server path, and the connection stays usable afterwards (a `ping`
gets `pong` and a valid job still completes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.conftest import Media, StartServer
from tests.helpers import Client, binary_frame, connect, job_dirs, next_error, wait_no_children

THUMB = {"timestamp": 0.5, "width": 64}


def start_job(job_id: str = "bad", operation: str = "speed", **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "start_job",
        "job_id": job_id,
        "operation": operation,
        "input": {"source": "upload"},
        "options": {"speed_factor": 2.0},
    }
    message.update(fields)
    return message


def assert_no_server_paths(error: dict[str, Any], *paths: Path) -> None:
    text = json.dumps(error)
    for secret in ("/tmp", *map(str, paths)):
        assert secret not in text, error


async def assert_usable(client: Client, media: Media, job_id: str = "after") -> None:
    """The connection still answers a ping and runs a job to completion."""
    await client.send({"type": "ping"})
    assert await client.recv_json() == {"type": "pong"}
    result = await client.run("thumbnail", media.clip, THUMB, job_id=job_id)
    assert result.final["type"] == "completed", result.final
    assert len(result.outputs) == 1 and result.outputs[0][1][:2] == b"\xff\xd8"  # a JPEG


async def check_text(
    url: str,
    media: Media,
    workdir: Path,
    text: str,
    code: str,
    job_id: str | None,
    field: str | None,
) -> dict[str, Any]:
    with trio.fail_after(30):
        async with connect(url) as client:
            await client.ws.send_message(text)
            error = await next_error(client, code, job_id)
            if job_id is None:
                assert "job_id" not in error, error
            if field is not None:
                assert error["details"]["field"] == field, error
            assert error["message"], error
            assert_no_server_paths(error, workdir)
            await assert_usable(client, media)
    return error


NAN = float("nan")
INF = float("inf")

# (case id, frame text, code, job_id named in the error, details.field)
TEXT_CASES: list[tuple[str, str, str, str | None, str | None]] = [
    ("not-json", "{not json", "INVALID_JSON", None, None),
    ("empty", "", "INVALID_JSON", None, None),
    ("array", "[1, 2]", "INVALID_JSON", None, None),
    ("string", '"start_job"', "INVALID_JSON", None, None),
    ("null", "null", "INVALID_JSON", None, None),
    ("no-type", json.dumps({"job_id": "j"}), "UNKNOWN_MESSAGE_TYPE", "j", None),
    ("unknown-type", json.dumps({"type": "launch"}), "UNKNOWN_MESSAGE_TYPE", None, None),
    ("type-not-str", json.dumps({"type": 7}), "UNKNOWN_MESSAGE_TYPE", None, None),
    (
        "missing-job-id",
        json.dumps({k: v for k, v in start_job().items() if k != "job_id"}),
        "VALIDATION_ERROR",
        None,
        "$.job_id",
    ),
    (
        "missing-operation",
        json.dumps({k: v for k, v in start_job("m").items() if k != "operation"}),
        "VALIDATION_ERROR",
        "m",
        "$.operation",
    ),
    ("extra-field", json.dumps(start_job("x", extra=1)), "VALIDATION_ERROR", "x", "$.extra"),
    ("job-id-int", json.dumps(start_job(5)), "VALIDATION_ERROR", None, "$.job_id"),  # type: ignore[arg-type]
    ("job-id-empty", json.dumps(start_job("")), "VALIDATION_ERROR", None, "$.job_id"),
    ("job-id-long", json.dumps(start_job("j" * 129)), "VALIDATION_ERROR", None, "$.job_id"),
    (
        "input-source",
        json.dumps(start_job("i", input={"source": "ftp"})),
        "VALIDATION_ERROR",
        "i",
        "$.input",
    ),
    (
        "input-extra",
        json.dumps(start_job("i", input={"source": "upload", "path": "/etc/passwd"})),
        "VALIDATION_ERROR",
        "i",
        "$.input.path",
    ),
    ("options-array", json.dumps(start_job("o", options=[])), "VALIDATION_ERROR", "o", "$.options"),
    ("ping-extra", json.dumps({"type": "ping", "x": 1}), "VALIDATION_ERROR", None, "$.x"),
    (
        "cancel-no-id",
        json.dumps({"type": "cancel_job"}),
        "VALIDATION_ERROR",
        None,
        "$.job_id",
    ),
    (
        "unknown-operation",
        json.dumps(start_job("u", "transmogrify", options={})),
        "UNKNOWN_OPERATION",
        "u",
        "$.operation",
    ),
    (
        "cancel-unknown-job",
        json.dumps({"type": "cancel_job", "job_id": "nope"}),
        "CANCEL_FAILED",
        "nope",
        None,
    ),
]


def option_case(
    name: str, operation: str, options: dict[str, Any], field: str
) -> tuple[str, str, str, str | None, str | None]:
    # json.dumps writes NaN/Infinity literals, which Python's json.loads accepts.
    text = json.dumps(start_job(name, operation, options=options))
    return (name, text, "VALIDATION_ERROR", name, field)


OPTION_CASES = [
    option_case("speed-missing", "speed", {}, "$.options.speed_factor"),
    option_case("speed-string", "speed", {"speed_factor": "2"}, "$.options.speed_factor"),
    option_case("speed-nan", "speed", {"speed_factor": NAN}, "$.options.speed_factor"),
    option_case("speed-inf", "speed", {"speed_factor": INF}, "$.options.speed_factor"),
    option_case("speed-neg-inf", "speed", {"speed_factor": -INF}, "$.options.speed_factor"),
    option_case("speed-low", "speed", {"speed_factor": 0.1}, "$.options.speed_factor"),
    option_case("speed-high", "speed", {"speed_factor": 10.5}, "$.options.speed_factor"),
    option_case("speed-bool", "speed", {"speed_factor": True}, "$.options.speed_factor"),
    option_case("speed-null", "speed", {"speed_factor": None}, "$.options.speed_factor"),
    option_case(
        "pitch-int", "speed", {"speed_factor": 2, "maintain_pitch": 1}, "$.options.maintain_pitch"
    ),
    option_case("crf-bool", "compress", {"crf": True}, "$.options.crf"),
    option_case("crf-high", "compress", {"crf": 52}, "$.options.crf"),
    option_case("crf-fraction", "compress", {"crf": 20.5}, "$.options.crf"),
    option_case("crf-inf", "compress", {"crf": INF}, "$.options.crf"),
    option_case("crf-string", "compress", {"crf": "23"}, "$.options.crf"),
    option_case("preset-word", "compress", {"preset": "ultra"}, "$.options.preset"),
    option_case("count-zero", "thumbnail", {"count": 0}, "$.options.count"),
    option_case("count-high", "thumbnail", {"count": 21}, "$.options.count"),
    option_case("thumb-format", "thumbnail", {"format": "bmp"}, "$.options.format"),
    option_case("trim-order", "trim", {"start_time": 2, "end_time": 1}, "$.options.end_time"),
    option_case("gif-long", "gif", {"duration": 31}, "$.options.duration"),
    option_case(
        "filter-width",
        "filter",
        {"filters": [{"type": "scale", "width": "wide"}]},
        "$.options.filters[0].width",
    ),
    option_case("filter-type", "filter", {"filters": [{"type": "blur"}]}, "$.options.filters[0]"),
    # Options that belong to another operation are unknown fields of this one.
    option_case("foreign-crf", "speed", {"speed_factor": 2, "crf": 20}, "$.options.crf"),
    option_case("foreign-speed", "compress", {"speed_factor": 2}, "$.options.speed_factor"),
    option_case(
        "foreign-format",
        "trim",
        {"start_time": 0, "end_time": 1, "format": "mp3"},
        "$.options.format",
    ),
]


@pytest.mark.parametrize(
    ("text", "code", "job_id", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in TEXT_CASES + OPTION_CASES],
)
async def test_bad_text_frame(
    server: Endpoints,
    media: Media,
    workdir: Path,
    text: str,
    code: str,
    job_id: str | None,
    field: str | None,
) -> None:
    await check_text(server.url, media, workdir, text, code, job_id, field)


def test_nan_literals_reach_the_server() -> None:
    """The NaN/Infinity cases above really send the non-standard literals."""
    text = json.dumps(start_job(options={"speed_factor": NAN, "x": INF}))
    assert "NaN" in text and "Infinity" in text


BINARY_CASES = [
    pytest.param(b"", None, id="empty"),
    pytest.param(b"\x00\x00\x01", None, id="shorter-than-4"),
    pytest.param(struct.pack(">I", 100) + b'{"job_id":"a"}', None, id="length-past-end"),
    pytest.param(struct.pack(">I", 0) + b"payload", None, id="length-zero"),
    pytest.param(struct.pack(">I", 0xFFFFFFFF) + b"x" * 16, None, id="length-huge"),
    pytest.param(struct.pack(">I", 8) + b"not json" + b"data", None, id="header-not-json"),
    pytest.param(struct.pack(">I", 2) + b"\xff\xfe" + b"data", None, id="header-not-utf8"),
    pytest.param(struct.pack(">I", 6) + b"[1, 2]" + b"data", None, id="header-array"),
    pytest.param(struct.pack(">I", 2) + b"17" + b"data", None, id="header-number"),
    pytest.param(binary_frame("", "a.mp4", b"data"), None, id="header-empty-job-id"),
    pytest.param(
        struct.pack(">I", 15) + b'{"filename":"x"}'[:15] + b"d", None, id="header-truncated"
    ),
    pytest.param(binary_frame("ghost", "a.mp4", b"data"), "ghost", id="unknown-job"),
]


@pytest.mark.parametrize(("frame", "job_id"), BINARY_CASES)
async def test_bad_binary_frame(
    server: Endpoints, media: Media, workdir: Path, frame: bytes, job_id: str | None
) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.ws.send_message(frame)
            error = await next_error(client, "INVALID_BINARY", job_id)
            assert error.get("job_id") == job_id
            assert_no_server_paths(error, workdir)
            await assert_usable(client, media)


async def test_second_upload_for_a_job_is_refused(
    server: Endpoints, media: Media, workdir: Path
) -> None:
    """A job takes one upload; a second frame for it is INVALID_BINARY and the job goes on."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("one", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            await client.upload("one", media.clip)
            await client.upload("one", media.clip)
            refused = completed = False
            outputs = 0
            while not (refused and outputs):
                message = await client.recv()
                if isinstance(message, bytes):
                    outputs += 1
                    continue
                assert message["job_id"] == "one", message
                if message["type"] == "error":
                    assert message["code"] == "INVALID_BINARY", message
                    assert_no_server_paths(message, workdir)
                    refused = True
                completed = completed or message["type"] == "completed"
            assert completed and outputs == 1
            await assert_usable(client, media)


async def test_upload_for_url_job_is_refused(
    start_server: StartServer, media: Media, workdir: Path
) -> None:
    """Binary for a job whose input is a URL: INVALID_BINARY naming the job."""
    server = await start_server(security={"allow_private_urls": True, "url_ports": [9]})
    with trio.fail_after(30):
        async with connect(server.url) as client:
            # A URL on a closed loopback port: the fetch fails fast; what matters is that
            # the binary frame is refused while the job is still receiving (or gone).
            await client.start("u", "thumbnail", THUMB, url="http://127.0.0.1:9/x.mp4")
            assert (await client.recv_json())["type"] == "ack"
            await client.upload("u", media.clip)
            codes = []
            # Both arrive, in either order: the refusal of the frame, and the job's end.
            while not {"INVALID_BINARY", "URL_FETCH_FAILED"} <= set(codes):
                message = await client.recv_json()
                assert message["type"] == "error" and message["job_id"] == "u", message
                assert_no_server_paths(message, workdir)
                codes.append(message["code"])
            await assert_usable(client, media)


async def test_upload_over_limit_is_too_large(
    start_server: StartServer, media: Media, workdir: Path, tmp_path: Path
) -> None:
    """An upload bigger than limits.max_upload_mb (but within the WebSocket message limit)
    ends its job with TOO_LARGE, and the job's temp dir is removed."""
    server = await start_server(limits={"max_upload_mb": 0.5, "max_message_mb": 4})
    big = tmp_path / "big.mp4"
    big.write_bytes(media.clip.read_bytes() + os.urandom(1024 * 1024))  # ~1.2 MB
    assert big.stat().st_size > 0.5 * 1024 * 1024
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("big", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            await client.upload("big", big)
            error = await next_error(client, "TOO_LARGE", "big")
            assert_no_server_paths(error, workdir)
            assert job_dirs(workdir) == []
            await assert_usable(client, media)  # the clip itself is under the limit
    assert job_dirs(workdir) == []


async def test_duplicate_job_id(server: Endpoints, media: Media, workdir: Path) -> None:
    """A second start_job with an active job's id is DUPLICATE_JOB; the first completes."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("dup", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            await client.start("dup", "speed", {"speed_factor": 2.0})  # still receiving
            error = await next_error(client, "DUPLICATE_JOB", "dup")
            assert_no_server_paths(error, workdir)
            await client.upload("dup", media.clip)
            result = await client.collect("dup")
            assert result.final["type"] == "completed", result.final
            assert result.outputs[0][0]["filename"].endswith(".jpg")  # the thumbnail job's
            # Once the first has ended the id is free again.
            await assert_usable(client, media, job_id="dup")


async def test_not_media_is_invalid_media(
    server: Endpoints, media: Media, workdir: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(64 * 1024))
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("junk", "thumbnail", THUMB)
            assert (await client.recv_json())["type"] == "ack"
            await client.upload("junk", junk)
            error = await next_error(client, "INVALID_MEDIA", "junk")
            assert_no_server_paths(error, workdir)
            assert job_dirs(workdir) == []
            await assert_usable(client, media)


# --- playlists and concat scripts disguised as media -----------------------------------

IN_OPEN = 0x00000020
IN_ACCESS = 0x00000001
IN_NONBLOCK = 0o4000


class OpenWatch:
    """inotify on one file: did anything open or read it?"""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            pytest.skip("inotify is not available")
        if libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS) < 0:
            os.close(self.fd)
            pytest.skip("cannot watch the file")

    def touched(self) -> bool:
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


def playlists(target: Path) -> dict[str, str]:
    return {
        "ffconcat": f"ffconcat version 1.0\nfile '{target}'\n",
        "concat-file-url": f"ffconcat version 1.0\nfile 'file:{target}'\n",
        "hls": (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:10.0,\nfile://{target}\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n"
        ),
        "hls-passwd": (
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n/etc/passwd\n#EXT-X-ENDLIST\n"
        ),
        "concat-passwd": "ffconcat version 1.0\nfile '/etc/passwd'\n",
    }


@pytest.mark.parametrize("kind", list(playlists(Path("/x"))))
@pytest.mark.parametrize("name", ["clip.mp4", "list.m3u8"])
async def test_playlist_disguised_as_media_is_refused_and_never_followed(
    server: Endpoints, media: Media, workdir: Path, tmp_path: Path, kind: str, name: str
) -> None:
    """An HLS playlist or ffconcat script naming other files is INVALID_MEDIA, and the
    file it names is never opened (watched with inotify) nor its content echoed."""
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(media.clip.read_bytes())  # real media: following it would "work"
    playlist = tmp_path / name
    playlist.write_text(playlists(secret)[kind])
    watch = OpenWatch(secret)
    try:
        with trio.fail_after(30):
            async with connect(server.url) as client:
                await client.start("pl", "thumbnail", THUMB)
                assert (await client.recv_json())["type"] == "ack"
                await client.upload("pl", playlist)
                error = await next_error(client, "INVALID_MEDIA", "pl")
                assert_no_server_paths(error, workdir, secret)
                assert "root:" not in json.dumps(error)
                assert await wait_no_children() == []
                assert not watch.touched(), "the server opened a file named in a playlist"
                secret.read_bytes()
                assert watch.touched(), "the watch itself works"
                await assert_usable(client, media)
    finally:
        watch.close()


async def test_binary_frame_before_any_job_then_valid_job(
    server: Endpoints, media: Media, workdir: Path
) -> None:
    """Several bad frames in a row, then a good job: errors do not accumulate state."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.ws.send_message("{")
            await client.ws.send_message(b"\x00")
            await client.send({"type": "cancel_job", "job_id": "zzz"})
            await next_error(client, "INVALID_JSON")
            await next_error(client, "INVALID_BINARY")
            await next_error(client, "CANCEL_FAILED", "zzz")
            await assert_usable(client, media)
