"""How a failed FFmpeg is reported: the limit it ran into by name, else its last words."""

from __future__ import annotations

import pytest

from ffserve.errors import ErrorCode
from ffserve.ffmpeg.process import ProcessFailed
from ffserve.ffmpeg.sandbox import ChildLimits
from ffserve.jobs.lifecycle import ffmpeg_failure

LIMITS = ChildLimits(512 << 20, 1 << 20, 60, 256, 256, 10)


@pytest.mark.parametrize(
    ("returncode", "stderr", "code", "says"),
    [
        (-25, "", ErrorCode.TOO_LARGE, "output limit"),  # SIGXFSZ, unconfined
        (128 + 25, "", ErrorCode.TOO_LARGE, "output limit"),  # SIGXFSZ, through bwrap
        (128 + 24, "", ErrorCode.TIMEOUT, "60 s of CPU"),  # SIGXCPU
        (1, "[x] Cannot allocate memory\n", ErrorCode.TOO_LARGE, "512 MiB"),
        (1, "x264 [error]: malloc of size 50520990 failed\n", ErrorCode.TOO_LARGE, "512 MiB"),
        (1, "Invalid data found in /srv/jobs/j1/input\n", ErrorCode.JOB_FAILED, "Invalid data"),
        (255, "", ErrorCode.TIMEOUT, "60 s of CPU"),  # FFmpeg trapped SIGXCPU
        (255, "Error while decoding\n", ErrorCode.JOB_FAILED, "Error while decoding"),
        (1, "", ErrorCode.JOB_FAILED, "could not process"),
    ],
)
def test_failures_name_their_cause(returncode: int, stderr: str, code: str, says: str) -> None:
    error = ffmpeg_failure(ProcessFailed("FFmpeg failed", returncode, stderr), LIMITS, ["/srv"])
    assert error.code == code
    assert says in error.message
    assert "/srv" not in error.message
