"""What `Client.run` returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Output:
    """One output file, on disk, verified against the size and sha256 the server sent."""

    path: Path
    metadata: dict[str, Any]  # the server's `output_metadata` for it (docs/protocol.md 3)


@attrs.frozen
class Result:
    """A completed job. `metadata` is `completed.output_metadata`: the first output's,
    or for `probe` (which has no output file) the input's."""

    job_id: str
    metadata: dict[str, Any]
    outputs: list[Output]
    message: str
