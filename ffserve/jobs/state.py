"""A job's life as one state machine: events in, state out (as h11's `_state.py` does it).

Everything that decides what a job may do next lives here: which event is allowed in
which state (`TRANSITIONS`), how many v1 uploads a job takes and until when, whether a
cancel can still change its outcome. Nothing outside this module assigns a job's state;
the job's code tells the machine what happened (`process`) and acts on the answer.

    RECEIVING --INPUT_RECEIVED--> PROBING --PLANNED--> QUEUED --SLOT_TAKEN--> RUNNING
        |  ^ UPLOAD_BEGUN            |                                           |
        |  '-----------'             '--METADATA_ONLY--.          FFMPEG_EXITED  |
        |                                               v                        v
        |                          DONE <--LAST_WORD-- DELIVERING <--VERIFIED-- VERIFYING
        |                           ^ ^
        |   CANCEL_REQUESTED from   | '--LAST_WORD-- CANCELLING    (JOB_CANCELLED queued)
        |   RECEIVING .. RUNNING    |----LAST_WORD-- FAILING       (its error queued)
        |                           '----LAST_WORD-- STOPPING      (SHUTTING_DOWN queued)
        |   SHUTDOWN (the drain deadline) from any live state to STOPPING, which takes
        |   every event but LAST_WORD and CANCEL_REQUESTED (too late: CANCEL_FAILED) as
        |   CANCELLING does; in CANCELLING, FAILING and DONE it changes nothing
        |   FAILED from any live state; in CANCELLING every event but LAST_WORD stays there;
        |   UPLOAD_BEGUN in CANCELLING
        |   and FAILING too while the input is open (the frame is dropped: the job's
        |   error is its answer)
        '-- ABORTED from any state: the connection or the server went away; nothing is owed

A job reaches DONE just before its last message is queued, so that a client that reads
that message may reuse the job id at once. A failed or delivering job can no longer be
cancelled (its outcome is fixed); a job whose cancel was asked for ends JOB_CANCELLED
unless it fails first.
"""

from __future__ import annotations

import enum

import attrs


class JobState(enum.Enum):
    RECEIVING = "receiving"  # waiting for uploads or fetching the URL
    PROBING = "probing"  # input complete: reading what it holds, planning the FFmpeg run
    QUEUED = "queued"  # waiting for a worker slot
    RUNNING = "running"  # FFmpeg is running
    VERIFYING = "verifying"  # FFmpeg has exited: its outputs are being probed
    DELIVERING = "delivering"  # sending results
    CANCELLING = "cancelling"  # the client cancelled: cleaning up, JOB_CANCELLED owed
    FAILING = "failing"  # the job failed: cleaning up, its error owed
    STOPPING = "stopping"  # the drain deadline passed: cleaning up, SHUTTING_DOWN owed
    DONE = "done"  # terminal: the last message is queued, or nobody is left to tell


class JobEvent(enum.Enum):
    UPLOAD_BEGUN = "upload begun"  # a binary frame for the job has begun
    INPUT_RECEIVED = "input received"
    PLANNED = "planned"  # probed and planned: wants a worker slot
    METADATA_ONLY = "metadata only"  # `probe`: the answer is the input's metadata
    SLOT_TAKEN = "slot taken"
    FFMPEG_EXITED = "ffmpeg exited"
    VERIFIED = "verified"
    CANCEL_REQUESTED = "cancel requested"
    FAILED = "failed"
    LAST_WORD = "last word"  # the job's last message is about to be queued
    ABORTED = "aborted"
    SHUTDOWN = "shutdown"  # the server's drain deadline passed with the job unfinished


S, E = JobState, JobEvent
_LIVE = (S.RECEIVING, S.PROBING, S.QUEUED, S.RUNNING, S.VERIFYING, S.DELIVERING)

TRANSITIONS: dict[JobState, dict[JobEvent, JobState]] = {
    S.RECEIVING: {E.UPLOAD_BEGUN: S.RECEIVING, E.INPUT_RECEIVED: S.PROBING},
    S.PROBING: {E.PLANNED: S.QUEUED, E.METADATA_ONLY: S.DELIVERING},
    S.QUEUED: {E.SLOT_TAKEN: S.RUNNING},
    S.RUNNING: {E.FFMPEG_EXITED: S.VERIFYING},
    S.VERIFYING: {E.VERIFIED: S.DELIVERING},
    S.DELIVERING: {E.LAST_WORD: S.DONE},
    # A cancelled job ends JOB_CANCELLED, as v1 did: its task carries on to its next
    # checkpoint (a second cancel, its own progress, or a failure meanwhile change
    # nothing), and uploads it still had coming are taken and dropped.
    S.CANCELLING: {
        E.UPLOAD_BEGUN: S.CANCELLING,
        E.CANCEL_REQUESTED: S.CANCELLING,
        E.INPUT_RECEIVED: S.CANCELLING,
        E.PLANNED: S.CANCELLING,
        E.METADATA_ONLY: S.CANCELLING,
        E.SLOT_TAKEN: S.CANCELLING,
        E.FFMPEG_EXITED: S.CANCELLING,
        E.FAILED: S.CANCELLING,
        E.LAST_WORD: S.DONE,
    },
    S.FAILING: {E.UPLOAD_BEGUN: S.FAILING, E.FAILED: S.FAILING, E.LAST_WORD: S.DONE},
    # Stopped by the server: as a cancelled job, whatever happens meanwhile; a cancel
    # from its client comes too late to change the outcome (SHUTTING_DOWN).
    S.STOPPING: {
        **{event: S.STOPPING for event in E if event not in (E.LAST_WORD, E.CANCEL_REQUESTED)},
        E.LAST_WORD: S.DONE,
    },
    S.DONE: {},
}
for _state in _LIVE:
    TRANSITIONS[_state][E.FAILED] = S.FAILING
# Cancelling still changes the outcome until FFmpeg's work is done.
for _state in (S.RECEIVING, S.PROBING, S.QUEUED, S.RUNNING):
    TRANSITIONS[_state][E.CANCEL_REQUESTED] = S.CANCELLING
# The drain stops every job still live; one whose outcome is owed already keeps it.
for _state in _LIVE:
    TRANSITIONS[_state][E.SHUTDOWN] = S.STOPPING
for _state in (S.CANCELLING, S.FAILING, S.DONE):
    TRANSITIONS[_state][E.SHUTDOWN] = _state
for _events in TRANSITIONS.values():
    _events[E.ABORTED] = S.DONE


class InvalidTransition(RuntimeError):
    """`event` is not allowed in `state`: the job's code (or its client) broke a rule."""

    def __init__(self, state: JobState, event: JobEvent) -> None:
        super().__init__(f"a {state.value} job cannot take {event.value!r}")
        self.state = state
        self.event = event


@attrs.define
class JobStateMachine:
    """One job's state. `uploads`: how many v1 (whole-file) uploads it takes; None for
    chunked input, whose files arrive in any number of frames."""

    uploads: int | None
    state: JobState = JobState.RECEIVING
    uploads_begun: int = 0
    # Until INPUT_RECEIVED: uploads may still arrive (also while a job that was receiving
    # is cancelled or fails).
    input_open: bool = True

    def process(self, event: JobEvent) -> JobState:
        """Apply `event`; returns the new state. Errors: InvalidTransition."""
        new = TRANSITIONS[self.state].get(event)
        if new is None or (event is E.UPLOAD_BEGUN and not self._takes_upload()):
            raise InvalidTransition(self.state, event)
        if event is E.UPLOAD_BEGUN:
            self.uploads_begun += 1
        elif event in (E.INPUT_RECEIVED, E.ABORTED):
            self.input_open = False
        self.state = new
        return new

    def _takes_upload(self) -> bool:
        # A v1 job takes as many whole-file uploads as it has inputs, and no more.
        return self.input_open and (self.uploads is None or self.uploads_begun < self.uploads)

    @property
    def active(self) -> bool:
        """Whether the job still holds its id on the connection."""
        return self.state is not JobState.DONE
