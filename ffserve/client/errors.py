"""What the client raises: every server `error` as a `ServerError` carrying its wire code.

    ClientError                    base of everything `ffserve.client` raises
     |- ConnectionFailed           no WebSocket: refused, handshake rejected (`.status`), lost
     |   '- Unauthorized           HTTP 401 at the handshake: no token, or a bad one
     |- TransferError              a delivered file does not match its size or sha256
     '- ServerError (.code)        an `error` message from the server
         |- InvalidRequest         VALIDATION_ERROR, UNKNOWN_OPERATION
         |- Busy                   BUSY, SHUTTING_DOWN (retry later, or another instance)
         |- QuotaExceeded          QUOTA_EXCEEDED (`.details["quota"]` names it)
         |- JobCancelled           JOB_CANCELLED
         '- JobFailed              every other code that ends a job: JOB_FAILED, TIMEOUT,
                                   TOO_LARGE, INVALID_MEDIA, NO_*_STREAM, UNSUPPORTED_MEDIA, ...

`ServerError.code` is always the server's code, so a caller can branch on a code with no
class of its own (e.g. `err.code == "OUT_OF_RANGE"`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class ClientError(Exception):
    """Base of the client's errors.

    `retryable`: the server surely has not taken the job (it refused it before its `ack`,
    or was never reached), so sending it again cannot run it twice (ffserve.client.retry).
    `retry_after_s`: the server's hint of how long to wait first, if it gave one.
    `attempts` and `tried_s`: how often and for how long it was tried, once retries gave up.
    """

    retryable: bool = False
    retry_after_s: float | None = None
    attempts: int = 1
    tried_s: float | None = None  # set once retries gave up

    def gave_up(self, attempts: int, tried_s: float) -> None:
        self.attempts, self.tried_s = attempts, tried_s

    def __str__(self) -> str:
        said = super().__str__()
        if self.tried_s is not None:
            times = "attempt" if self.attempts == 1 else "attempts"
            said += f" (gave up after {self.attempts} {times} in {self.tried_s:.1f} s)"
        return said


class ConnectionFailed(ClientError):
    """No usable connection: `status` is the HTTP status of a refused handshake, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(ConnectionFailed):
    """The server requires a valid token (HTTP 401 at the handshake)."""


class TransferError(ClientError):
    """A delivered output does not match the size or sha256 the server announced."""


class ServerError(ClientError):
    """An `error` message from the server; `code` is its wire code."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        job_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.job_id = job_id
        self.details = details or {}
        hint = self.details.get("retry_after_s")
        if isinstance(hint, int | float) and not isinstance(hint, bool) and 0 <= hint < 3600:
            self.retry_after_s = float(hint)


class InvalidRequest(ServerError):
    """VALIDATION_ERROR or UNKNOWN_OPERATION: `details["field"]` names the JSON path."""


class Busy(ServerError):
    """BUSY or SHUTTING_DOWN: the server takes no more now; retrying later may work, and
    `Client.run` does so itself while the job was refused before it began."""


class QuotaExceeded(ServerError):
    """QUOTA_EXCEEDED: `details["quota"]` names the quota."""


class JobCancelled(ServerError):
    """JOB_CANCELLED: the job was cancelled (by this client)."""


class JobFailed(ServerError):
    """The job ended without a result (JOB_FAILED and the other job-ending codes)."""


CLASSES: dict[str, type[ServerError]] = {
    "VALIDATION_ERROR": InvalidRequest,
    "UNKNOWN_OPERATION": InvalidRequest,
    "BUSY": Busy,
    "SHUTTING_DOWN": Busy,
    "QUOTA_EXCEEDED": QuotaExceeded,
    "JOB_CANCELLED": JobCancelled,
}
# Codes about a single frame or message, not the job's outcome.
PROTOCOL_CODES = frozenset(
    {"INVALID_JSON", "UNKNOWN_MESSAGE_TYPE", "INVALID_BINARY", "INVALID_CHUNK", "CANCEL_FAILED"}
)


def server_error(message: dict[str, Any]) -> ServerError:
    """The exception for one `error` message."""
    code = str(message.get("code", "INTERNAL_ERROR"))
    details = message.get("details")
    cls = CLASSES.get(code) or (ServerError if code in PROTOCOL_CODES else JobFailed)
    return cls(
        code,
        str(message.get("message", "")),
        job_id=message.get("job_id"),
        details=details if isinstance(details, dict) else None,
    )


@contextlib.contextmanager
def one_error() -> Iterator[None]:
    """Raise a nursery's group of one exception as that exception: a caller of `run`
    catches `JobFailed`, not an ExceptionGroup holding one."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
