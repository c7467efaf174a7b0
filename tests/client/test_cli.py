"""`ffserve submit` and `ffserve probe` as a user runs them: a subprocess against a server
started in the test, checked by exit code, output files (probed) and the server's state."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from ffserve.errors import ValidationError
from ffserve.service.server import Endpoints
from ffserve.wire.options import parse_options
from tests.client.test_client import health, token_for
from tests.conftest import BLOCKER_OPTIONS, Media, StartServer
from tests.helpers import duration, job_dirs, probe, streams
from tests.session.keys import Keys

ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFSERVE_")}
    return {**env, "PYTHONPATH": str(ROOT)}


async def ffserve(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "ffserve", *args],
        env=cli_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_submit_writes_the_outputs(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    server = await start_server(limits={"chunk_kb": 64})
    out = tmp_path / "out"
    with trio.fail_after(60):
        done = await ffserve(
            "submit", str(media.clip), str(media.long), "--op", "speed",
            "--opt", "speed_factor=2", "--url", server.url, "--out", str(out),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    for source, seconds in ((media.clip, 1.0), (media.long, 3.0)):
        [result] = out.glob(source.stem + "_*.mp4")
        info = probe(result)
        assert abs(duration(info) - seconds) < 0.1
        assert [s["codec_name"] for s in streams(info, "video")] == ["h264"]
        assert str(result) in done.stdout.decode()  # one summary line per output
    assert b"100%" in done.stderr  # the bars, drawn on stderr


async def test_options_are_checked_before_connecting(media: Media) -> None:
    with pytest.raises(ValidationError) as expected:
        parse_options("speed", {"speed_factor": 20})
    with trio.fail_after(30):
        # Nothing listens on port 1: a connection attempt would exit 3, not 2.
        done = await ffserve(
            "submit", str(media.clip), "--op", "speed", "--opt", "speed_factor=20",
            "--url", "ws://127.0.0.1:1/", "--retries", "0",
        )  # fmt: skip
        unknown = await ffserve("submit", str(media.clip), "--op", "explode")
        missing = await ffserve("submit", "/no/such/file.mp4", "--op", "probe")
    assert done.returncode == 2
    assert done.stderr.decode().strip() == f"ffserve: VALIDATION_ERROR: {expected.value.message}"
    assert (unknown.returncode, missing.returncode) == (2, 2)
    assert b"UNKNOWN_OPERATION" in unknown.stderr


async def test_exit_codes_for_failures(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    server = await start_server()
    keys = Keys.make(tmp_path)
    locked = await start_server(auth={"mode": "jwt", "secret_file": str(keys.secret_file)})
    with trio.fail_after(60):
        failed = await ffserve(
            "submit", str(media.silent), "--op", "extract_audio", "--url", server.url,
            "--out", str(tmp_path),
        )  # fmt: skip
        no_server = await ffserve(
            "probe", str(media.clip), "--url", "ws://127.0.0.1:1/", "--retries", "1"
        )
        bad_retries = await ffserve("probe", str(media.clip), "--retries", "-1")
        no_token = await ffserve("probe", str(media.clip), "--url", locked.url)
        with_token = await ffserve(
            "probe", str(media.clip), "--url", locked.url, "--token", token_for(keys)
        )
    assert failed.returncode == 1 and b"NO_AUDIO_STREAM" in failed.stderr
    assert no_server.returncode == 3
    # Refused, tried again with backoff until the bound: said in the error.
    assert re.search(
        rb"cannot connect to .*failed \(gave up after 2 attempts in \d+\.\d s\)", no_server.stderr
    )
    assert bad_retries.returncode == 2 and b"-1 is below 0" in bad_retries.stderr
    assert no_token.returncode == 3 and b"HTTP 401" in no_token.stderr
    assert with_token.returncode == 0, with_token.stderr.decode()


async def test_probe_json(start_server: StartServer, media: Media) -> None:
    server = await start_server()
    with trio.fail_after(30):
        done = await ffserve("probe", str(media.clip), "--json", "--url", server.url)
        table = await ffserve("probe", str(media.clip), "--url", server.url)
    assert done.returncode == 0, done.stderr.decode()
    metadata = json.loads(done.stdout)
    assert metadata["duration"] == pytest.approx(2.0, abs=0.1)
    video, audio = metadata["streams"]
    assert (video["codec"], video["width"], video["height"]) == ("h264", 640, 360)
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 44100, 2)
    assert table.returncode == 0 and b"640x360" in table.stdout


async def wait_running(server: Endpoints) -> None:
    """Polls: the job runs in the server, the one place that knows (bounded by the test)."""
    while True:
        if (await health(server))["running"] == 1:
            return
        await trio.sleep(0.05)


async def test_ctrl_c_cancels_the_job(
    start_server: StartServer, blocker: Path, tmp_path: Path, workdir: Path
) -> None:
    server = await start_server()
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "ffserve", "submit", str(blocker), "--op", "speed",
        "--opt", f"speed_factor={BLOCKER_OPTIONS['speed_factor']}",
        "--url", server.url, "--out", str(out),
    ]  # fmt: skip
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            run = partial(
                trio.run_process,
                command,
                env=cli_env(),
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            process: trio.Process = await nursery.start(run)
            await wait_running(server)
            process.send_signal(signal.SIGINT)
            assert process.stderr is not None
            stderr = b"".join([chunk async for chunk in process.stderr])
            code = await process.wait()
    assert code == 130, stderr.decode()
    assert b"job cancelled" in stderr and b"Traceback" not in stderr
    state = await health(server)
    assert (state["running"], state["queued"]) == (0, 0)
    assert not job_dirs(workdir) and not list(out.iterdir())
