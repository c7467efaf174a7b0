"""A wrong output is a failed job, never a `completed` (issue 13, item 2).

Each test runs the real operation with one step of its FFmpeg command taken out, the way
a bug or an odd input would (a stream left unretimed, a cut not made, a stream not
dropped, a scale lost), through a real server and FFmpeg: the output is playable and
FFmpeg exits 0, and only the check against the operation's promise can tell.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ffserve.ffmpeg import ops
from ffserve.ffmpeg.ops import Plan, Source
from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import connect

Change = Callable[[list[str]], list[str]]


def without(*dropped: str) -> Change:
    """Drop each of `dropped` (an option and its value) from the arguments."""

    def change(args: list[str]) -> list[str]:
        for option in dropped:
            at = args.index(option)
            del args[at : at + 2]
        return args

    return change


def replacing(old: str, new: str) -> Change:
    return lambda args: [a.replace(old, new) for a in args]


def mapping_audio(args: list[str]) -> list[str]:
    at = args.index("-an")
    return [*args[:at], "-map", "0:a", *args[at + 1 :]]


def sabotage(monkeypatch: pytest.MonkeyPatch, operation: str, change: Change) -> None:
    real = ops.SINGLE[operation]

    def broken(options: Any, source: Source, workdir: Path) -> Plan:
        plan = real(options, source, workdir)
        return attrs.evolve(plan, args=tuple(change(list(plan.args))))

    monkeypatch.setitem(ops.SINGLE, operation, broken)


CASES = {
    # The speed bug: one stream carried into the output unretimed.
    "speed_unretimed": (
        "speed",
        {"speed_factor": 2},
        replacing("setpts=PTS/2,", ""),
        r"output duration 6\.\d+ s, expected 3\.\d+ s \(speed 2 of 6\.\d+ s\)",
    ),
    "trim_uncut": (
        "trim",
        {"start_time": 1, "end_time": 2.5},
        without("-t"),
        r"output duration 5\.\d+ s, expected 1\.5 s \(trim 1-2\.5 s of 6\.\d+ s\)",
    ),
    "remove_audio_kept": (
        "remove_audio",
        {},
        mapping_audio,
        r"output has an audio stream, expected none \(remove_audio of 6\.\d+ s\)",
    ),
    "thumbnail_unscaled": (
        "thumbnail",
        {"width": 160},
        replacing("scale=160:120,", ""),
        r"output picture is 320x240, expected 160x120 \(thumbnail of 160x120\)",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_broken_promise_fails_the_job(
    server: Endpoints, media: Media, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    operation, options, change, message = CASES[name]
    with trio.fail_after(60):
        async with connect(server.url) as client:
            honest = await client.run(operation, media.long, options, job_id="honest")
            sabotage(monkeypatch, operation, change)
            broken = await client.run(operation, media.long, options, job_id="broken")
    assert honest.final["type"] == "completed", honest.final
    final = broken.final
    assert final["type"] == "error", final
    assert final["code"] == "JOB_FAILED", final
    assert re.fullmatch(message, final["message"]), final["message"]
    assert final["details"]["output"].startswith("long"), final
    assert not broken.outputs  # nothing wrong is delivered
