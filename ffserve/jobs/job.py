"""A job: what the client asked for, its cancel scope, its upload inbox and its state.

The job's rules live in its state machine (`ffserve.jobs.state`); this class tells the
machine what happened and turns a refused event the client caused (a frame it should not
have sent, a cancel that comes too late) into the client-facing error.
"""

from __future__ import annotations

import attrs
import trio

from ffserve.errors import ErrorCode, FFserveError, ProtocolError
from ffserve.ffmpeg.ops import inputs_expected
from ffserve.jobs.state import InvalidTransition, JobEvent, JobState, JobStateMachine
from ffserve.metrics import JobRecord
from ffserve.transfer.inbox import UploadInbox
from ffserve.wire.messages import Delivery, Input, OutputTarget, UploadInput, UrlInput
from ffserve.wire.options import Options


@attrs.define(eq=False)
class Job:
    job_id: str
    operation: str
    options: Options
    input: Input
    owner: object  # whose turn it is in the worker pool: the connection
    delivery: Delivery | None = None
    output: OutputTarget | None = None
    connection_id: str = "-"  # for the log: which connection's job this is
    progress_detail: bool = False  # extension: progress carries eta_s and speed
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    inbox: UploadInbox = attrs.Factory(UploadInbox.open)
    record: JobRecord = attrs.Factory(JobRecord)  # what it did, for the metrics and the log
    inputs_total: int = attrs.field(init=False)  # files the job takes, URL included
    _machine: JobStateMachine = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.inputs_total = inputs_expected(self.options)
        self._machine = JobStateMachine(None if self.chunked else self.uploads_expected)

    @property
    def uploads_expected(self) -> int:
        # A URL is the first input; any others are uploads.
        return self.inputs_total - (1 if isinstance(self.input, UrlInput) else 0)

    @property
    def chunked(self) -> bool:
        return isinstance(self.input, UploadInput) and self.input.files is not None

    @property
    def state(self) -> JobState:
        return self._machine.state

    @property
    def active(self) -> bool:
        """Whether the job still holds its id: until its last message is queued."""
        return self._machine.active

    def process(self, event: JobEvent) -> None:
        """Errors: InvalidTransition (a bug: the job's own code broke a rule)."""
        self._machine.process(event)

    def begin_upload(self) -> None:
        """A binary frame for this job has begun; its pieces follow into `inbox`.

        Errors: ProtocolError(INVALID_BINARY) when the job is not waiting for an upload.
        """
        try:
            self._machine.process(JobEvent.UPLOAD_BEGUN)
        except InvalidTransition:
            raise ProtocolError(
                f"job {self.job_id!r} is not waiting for an upload"
                + ("" if self.uploads_expected else " (its input is a URL)"),
                code=ErrorCode.INVALID_BINARY,
                job_id=self.job_id,
            ) from None

    def input_complete(self) -> bool:
        """Every input is on disk: frames are refused from now on. True when bytes were
        still waiting past the end of the input (a chunked upload that overruns)."""
        overrun = self.inbox.close()
        self._machine.process(JobEvent.INPUT_RECEIVED)
        return overrun

    def cancel(self) -> None:
        """The client's cancel_job. Errors: FFserveError(CANCEL_FAILED) once the job's
        outcome is fixed (it has failed, or FFmpeg's work is done)."""
        try:
            self._machine.process(JobEvent.CANCEL_REQUESTED)
        except InvalidTransition:
            raise FFserveError(
                f"job {self.job_id!r} has already finished processing",
                code=ErrorCode.CANCEL_FAILED,
                job_id=self.job_id,
            ) from None
        self.scope.cancel()

    def shut_down(self) -> None:
        """The server's drain deadline has passed: stop the job, which then ends with
        SHUTTING_DOWN; one whose outcome is already owed (failed, cancelled) keeps it."""
        before = self._machine.state
        if self._machine.process(JobEvent.SHUTDOWN) is not before:
            self.scope.cancel()

    def end(self) -> None:
        """The job's task is over, however it ended: wake a reader blocked handing it a
        piece, and free its id if its last word never went out (nobody is left to tell)."""
        self.inbox.close()
        if self._machine.active:
            self._machine.process(JobEvent.ABORTED)
