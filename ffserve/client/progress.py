"""What a job's `progress` callback receives: one small frozen event per update."""

from __future__ import annotations

import attrs


@attrs.frozen
class JobProgress:
    """Where a job is.

    `phase` is `upload` (bytes on the server's disk), `queued` (waiting for a worker),
    `processing` (FFmpeg running) or `delivery` (outputs arriving). `percentage` is of that
    phase. While processing, `eta_s` is the server's estimate of the seconds left and
    `speed` FFmpeg's own speed (output seconds per second, `2.5` = 2.5x real time), each
    None until FFmpeg has reported it. Upload and delivery give `done_bytes`/`total_bytes`.
    """

    job_id: str
    phase: str
    percentage: float
    stage: str = ""
    eta_s: float | None = None
    speed: float | None = None
    done_bytes: int | None = None
    total_bytes: int | None = None
