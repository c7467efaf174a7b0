"""The errors a client can see, each carrying its wire code.

    FFserveError (code)       CANCEL_FAILED; the base every client-facing error shares
     |- ProtocolError         a frame that is refused and forgotten: INVALID_JSON,
     |                        UNKNOWN_MESSAGE_TYPE, INVALID_BINARY, INVALID_CHUNK
     |- ValidationError       VALIDATION_ERROR, UNKNOWN_OPERATION (`field` names the JSON path)
     |- JobError              ends one job: JOB_FAILED, TIMEOUT, TOO_LARGE, INVALID_MEDIA,
     |                        NO_*_STREAM, OUT_OF_RANGE, URL_*, CHECKSUM_MISMATCH, and
     |                        VALIDATION_ERROR when only the media shows an option is wrong
     '- AdmissionError        a job refused at the door: BUSY, DUPLICATE_JOB, TOO_LARGE,
                              SHUTTING_DOWN, QUOTA_EXCEEDED

The class says what happens to the job; the code says why. Foreign errors (OSError, httpx,
FFmpeg exit codes) are translated into these at the boundary where they happen, so the
connection only ever has to format an `FFserveError`; anything else that escapes a job is
INTERNAL_ERROR for that job. Messages never contain server paths or raw FFmpeg output.
"""

from __future__ import annotations

from typing import Any


class ErrorCode:
    """Wire codes. The first eight are protocol v1's; the rest are additive."""

    INVALID_JSON = "INVALID_JSON"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    JOB_FAILED = "JOB_FAILED"
    JOB_CANCELLED = "JOB_CANCELLED"
    CANCEL_FAILED = "CANCEL_FAILED"
    INVALID_BINARY = "INVALID_BINARY"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Additions.
    UNKNOWN_OPERATION = "UNKNOWN_OPERATION"
    DUPLICATE_JOB = "DUPLICATE_JOB"
    BUSY = "BUSY"
    TIMEOUT = "TIMEOUT"
    TOO_LARGE = "TOO_LARGE"
    INVALID_MEDIA = "INVALID_MEDIA"
    NO_AUDIO_STREAM = "NO_AUDIO_STREAM"
    NO_VIDEO_STREAM = "NO_VIDEO_STREAM"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    URL_FORBIDDEN = "URL_FORBIDDEN"
    URL_FETCH_FAILED = "URL_FETCH_FAILED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    UNSUPPORTED_MEDIA = "UNSUPPORTED_MEDIA"
    NO_SUBTITLE_STREAM = "NO_SUBTITLE_STREAM"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    INVALID_CHUNK = "INVALID_CHUNK"
    URL_UPLOAD_FAILED = "URL_UPLOAD_FAILED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


class FFserveError(Exception):
    """Base: an error with a wire code, a client-safe message and optional details."""

    code: str = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.job_id = job_id


class ProtocolError(FFserveError):
    """A frame that cannot be understood at all."""


class ValidationError(FFserveError):
    """A well-formed message whose fields are wrong; `field` is a JSON path like `$.options.crf`."""

    code = ErrorCode.VALIDATION_ERROR

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, details={"field": field} if field else None)
        self.field = field


class JobError(FFserveError):
    """Something that ends one job; the connection and other jobs carry on."""

    code = ErrorCode.JOB_FAILED


class AdmissionError(FFserveError):
    """A job or frame refused at the door."""
