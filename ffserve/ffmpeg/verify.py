"""The step after FFmpeg: every output read back and measured before anything is sent.

A job's outputs become `VerifiedOutput`s here, each with the v1 `output_metadata` a
client is told, so that delivery only ever sends files that were probed, are within the
output limit, and are what the operation promised (duration, kinds of stream, picture
size): a wrong result is a failed job, never a `completed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ffserve.errors import ErrorCode, JobError
from ffserve.ffmpeg.ops import Output
from ffserve.ffmpeg.probe import Prober
from ffserve.ffmpeg.promise import Promise, broken_promise
from ffserve.media.metadata import output_metadata


@attrs.frozen
class VerifiedOutput:
    path: Path
    filename: str
    container: str
    metadata: dict[str, Any]  # `completed.output_metadata`, filename first

    @property
    def size(self) -> int:
        size: int = self.metadata["size_bytes"]
        return size


async def verify_outputs(
    prober: Prober, outputs: Sequence[Output], promise: Promise, max_bytes: int
) -> list[VerifiedOutput]:
    """Errors: JobError(JOB_FAILED) for a missing or unreadable output or one that breaks
    `promise`, JobError(TOO_LARGE) for one over `max_bytes`."""
    verified = []
    for output in outputs:
        info = await prober.probe_output(output.path, output.container)
        metadata = {"filename": output.filename, **output_metadata(info, output.container)}
        if metadata["size_bytes"] > max_bytes:
            raise JobError(
                f"output is {metadata['size_bytes']} bytes, over the {max_bytes}-byte output limit",
                code=ErrorCode.TOO_LARGE,
            )
        broken = broken_promise(promise, info)
        if broken is not None:
            raise JobError(broken, details={"output": output.filename})
        verified.append(VerifiedOutput(output.path, output.filename, output.container, metadata))
    return verified
