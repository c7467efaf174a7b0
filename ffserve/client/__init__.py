"""A Python client for ffserve, on Trio and trio-websocket.

    async with open_client("ws://127.0.0.1:8765/", token=None) as client:
        result = await client.run("compress", ["in.mp4"], {"preset": "low"},
                                  out_dir="out", progress=print)
        result.outputs[0].path, result.outputs[0].metadata["duration"]

Files travel in chunks (docs/protocol.md 8.4) whatever their size, with bounded memory.
Outputs are written into `out_dir` (default: the current directory) under the names the
server gives them, replacing files of the same name, each only once its sha256 matches.
Cancelling `run` (its cancel scope) cancels the job on the server. Errors are the
exceptions of `ffserve.client.errors`. From asyncio code, see `ffserve.client.blocking`.
"""

from __future__ import annotations

from ffserve.client.connection import Client, open_client
from ffserve.client.errors import (
    Busy,
    ClientError,
    ConnectionFailed,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    QuotaExceeded,
    ServerError,
    TransferError,
    Unauthorized,
)
from ffserve.client.progress import JobProgress
from ffserve.client.result import Output, Result

__all__ = [
    "Busy",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "InvalidRequest",
    "JobCancelled",
    "JobFailed",
    "JobProgress",
    "Output",
    "QuotaExceeded",
    "Result",
    "ServerError",
    "TransferError",
    "Unauthorized",
    "open_client",
]
