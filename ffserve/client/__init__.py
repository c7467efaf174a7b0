"""A Python client for ffserve, on Trio and trio-websocket.

    async with open_client("ws://127.0.0.1:8765/", token=None) as client:
        result = await client.run("compress", ["in.mp4"], {"preset": "low"},
                                  out_dir="out", progress=print)
        result.outputs[0].path, result.outputs[0].metadata["duration"]

Files travel in chunks (docs/protocol.md 8.4) whatever their size, with bounded memory.
Outputs are written into `out_dir` (default: the current directory) under the names the
server gives them, replacing files of the same name, each only once its sha256 matches.
Cancelling `run` (its cancel scope) cancels the job on the server. Errors are the
exceptions of `ffserve.client.errors`. A job the server refused before it began (BUSY,
SHUTTING_DOWN) or never got (no connection) is tried again with backoff, within the
bounds of `retry=Retry(...)` (`ffserve.client.retry`); never once its upload began.
From asyncio code, see `ffserve.client.blocking`.
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
from ffserve.client.retry import NO_RETRY, Retry

__all__ = [
    "NO_RETRY",
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
    "Retry",
    "ServerError",
    "TransferError",
    "Unauthorized",
    "open_client",
]
