"""The work budget: what the options ask of FFmpeg, bounded before it starts.

The input limits say how big a file may be; the options can still ask for far more work
than the input holds: a small clip scaled to 8192x8192 (6.4 GB and 96 minutes of x264
measured), twenty thumbnails of an 8K clip at once (past 12 GB). So a plan is refused
when a frame it makes is larger than the frame limit, or when the frames it holds at
once (one per input FFmpeg opens, each at the larger of its input's and the output's
size) pass `limits.max_pixels_in_flight`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ffserve.config import LimitsConfig
from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops import Plan, Source


def check_budget(plan: Plan, sources: Sequence[Source], limits: LimitsConfig) -> None:
    """Errors: JobError(TOO_LARGE) naming the option's result and the limit."""
    out = plan.frame_size[0] * plan.frame_size[1] if plan.frame_size else 0
    if plan.frame_size and (
        plan.frame_size[0] > limits.max_width or plan.frame_size[1] > limits.max_height
    ):
        width, height = plan.frame_size
        raise JobError(
            f"the options make {width}x{height} frames; the limit is "
            f"{limits.max_width}x{limits.max_height}",
            code=ErrorCode.TOO_LARGE,
            details={"limit": "frame_size"},
        )
    largest_input = max(
        ((v.width or 0) * (v.height or 0) for s in sources if (v := s.info.video)), default=0
    )
    # Thumbnail sets open the input once per picture; a plan's steps run one after another.
    decoders = max(step.count("-i") for step in (plan.args, *plan.before))
    in_flight = decoders * max(largest_input, out)
    if in_flight > limits.max_pixels_in_flight:
        raise JobError(
            f"the job would hold {decoders} frames of up to {max(largest_input, out)} pixels "
            f"at once; the limit is {limits.max_pixels_in_flight} pixels (fewer thumbnails, "
            "or smaller ones, fit)",
            code=ErrorCode.TOO_LARGE,
            details={"limit": "pixels_in_flight"},
        )
