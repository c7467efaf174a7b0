"""The job state machine on its own: every event in every state, legal or not."""

from __future__ import annotations

import pytest

from ffserve.jobs.state import (
    TRANSITIONS,
    InvalidTransition,
    JobEvent,
    JobState,
    JobStateMachine,
)

S, E = JobState, JobEvent
LIVE = (S.RECEIVING, S.PROBING, S.QUEUED, S.RUNNING, S.VERIFYING, S.DELIVERING)

# The whole table, written out: (state, event) -> new state. Anything not here is illegal.
LEGAL: dict[tuple[JobState, JobEvent], JobState] = {
    (S.RECEIVING, E.UPLOAD_BEGUN): S.RECEIVING,
    (S.RECEIVING, E.INPUT_RECEIVED): S.PROBING,
    (S.PROBING, E.PLANNED): S.QUEUED,
    (S.PROBING, E.METADATA_ONLY): S.DELIVERING,
    (S.QUEUED, E.SLOT_TAKEN): S.RUNNING,
    (S.RUNNING, E.FFMPEG_EXITED): S.VERIFYING,
    (S.VERIFYING, E.VERIFIED): S.DELIVERING,
    (S.DELIVERING, E.LAST_WORD): S.DONE,
    (S.CANCELLING, E.UPLOAD_BEGUN): S.CANCELLING,
    (S.CANCELLING, E.CANCEL_REQUESTED): S.CANCELLING,
    (S.CANCELLING, E.FAILED): S.CANCELLING,
    **{
        (S.CANCELLING, event): S.CANCELLING
        for event in (E.INPUT_RECEIVED, E.PLANNED, E.METADATA_ONLY, E.SLOT_TAKEN, E.FFMPEG_EXITED)
    },
    (S.CANCELLING, E.LAST_WORD): S.DONE,
    (S.FAILING, E.UPLOAD_BEGUN): S.FAILING,
    (S.FAILING, E.FAILED): S.FAILING,
    (S.FAILING, E.LAST_WORD): S.DONE,
    **{(state, E.FAILED): S.FAILING for state in LIVE},
    **{
        (state, E.CANCEL_REQUESTED): S.CANCELLING
        for state in (S.RECEIVING, S.PROBING, S.QUEUED, S.RUNNING)
    },
    # The drain's deadline stops every live job; one whose outcome is owed keeps it.
    **{(state, E.SHUTDOWN): S.STOPPING for state in LIVE},
    **{(state, E.SHUTDOWN): state for state in (S.CANCELLING, S.FAILING, S.DONE)},
    **{
        (S.STOPPING, event): S.STOPPING
        for event in JobEvent
        if event not in (E.LAST_WORD, E.CANCEL_REQUESTED, E.ABORTED)
    },
    (S.STOPPING, E.LAST_WORD): S.DONE,
    **{(state, E.ABORTED): S.DONE for state in JobState},
}
EVERY = [(state, event) for state in JobState for event in JobEvent]


def machine_in(state: JobState, uploads: int | None = None) -> JobStateMachine:
    return JobStateMachine(uploads, state=state)


def test_the_table_is_exactly_the_documented_one() -> None:
    table = {
        (state, event): new
        for state, events in TRANSITIONS.items()
        for event, new in events.items()
    }
    assert table == LEGAL
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize(("state", "event"), EVERY, ids=lambda v: v.name)
def test_every_event_in_every_state(state: JobState, event: JobEvent) -> None:
    machine = machine_in(state)
    if (state, event) in LEGAL:
        assert machine.process(event) is LEGAL[state, event]
        assert machine.state is LEGAL[state, event]
    else:
        with pytest.raises(InvalidTransition) as refused:
            machine.process(event)
        assert (refused.value.state, refused.value.event) == (state, event)
        assert machine.state is state  # a refused event changes nothing


def test_done_is_terminal_but_for_abort() -> None:
    # SHUTDOWN too, changing nothing: a job whose last word is queued is still listed on
    # its connection until its task unwinds, and the drain stops every job listed.
    assert TRANSITIONS[S.DONE] == {E.ABORTED: S.DONE, E.SHUTDOWN: S.DONE}
    assert not machine_in(S.DONE).active
    assert all(machine_in(state).active for state in JobState if state is not S.DONE)


@pytest.mark.parametrize("uploads", [1, 2, 3])
def test_a_v1_job_takes_as_many_uploads_as_it_has_inputs(uploads: int) -> None:
    machine = JobStateMachine(uploads)
    for _ in range(uploads):
        machine.process(E.UPLOAD_BEGUN)
    with pytest.raises(InvalidTransition):
        machine.process(E.UPLOAD_BEGUN)
    assert machine.uploads_begun == uploads and machine.state is S.RECEIVING


def test_a_url_job_takes_no_upload() -> None:
    with pytest.raises(InvalidTransition):
        JobStateMachine(0).process(E.UPLOAD_BEGUN)


def test_a_chunked_job_takes_any_number_of_frames() -> None:
    machine = JobStateMachine(None)
    for _ in range(100):
        machine.process(E.UPLOAD_BEGUN)
    assert machine.state is S.RECEIVING


@pytest.mark.parametrize("state", [S.CANCELLING, S.FAILING, S.STOPPING])
def test_an_ending_job_swallows_the_uploads_it_had_coming(state: JobState) -> None:
    """Ended while receiving: uploads still on the wire are taken (and dropped), as many as
    the job had coming; none after its input was complete; never one for a URL job."""
    machine = JobStateMachine(2, state=state, uploads_begun=1)
    machine.process(E.UPLOAD_BEGUN)
    assert machine.state is state
    with pytest.raises(InvalidTransition):
        machine.process(E.UPLOAD_BEGUN)
    with pytest.raises(InvalidTransition):
        JobStateMachine(0, state=state).process(E.UPLOAD_BEGUN)
    with pytest.raises(InvalidTransition):
        JobStateMachine(None, state=state, input_open=False).process(E.UPLOAD_BEGUN)


def test_no_upload_once_the_input_is_complete() -> None:
    machine = JobStateMachine(None)
    machine.process(E.UPLOAD_BEGUN)
    machine.process(E.INPUT_RECEIVED)
    for event in (E.CANCEL_REQUESTED, E.FAILED):
        with pytest.raises(InvalidTransition):
            machine.process(E.UPLOAD_BEGUN)
        machine.process(event)
    assert machine.state is S.CANCELLING  # cancelled stays the outcome


@pytest.mark.parametrize("state", LIVE)
def test_the_drain_deadline_stops_a_live_job_for_good(state: JobState) -> None:
    """SHUTDOWN from any live state: SHUTTING_DOWN is owed whatever happens next (a
    failure, FFmpeg exiting), and a cancel from the client is too late."""
    machine = machine_in(state)
    machine.process(E.SHUTDOWN)
    for event in (E.FAILED, E.FFMPEG_EXITED, E.SHUTDOWN):
        assert machine.process(event) is S.STOPPING
    with pytest.raises(InvalidTransition):
        machine.process(E.CANCEL_REQUESTED)
    assert machine.process(E.LAST_WORD) is S.DONE


def test_whole_lives() -> None:
    """The paths a job really takes, event by event."""
    completed = [E.UPLOAD_BEGUN, E.INPUT_RECEIVED, E.PLANNED, E.SLOT_TAKEN]
    completed += [E.FFMPEG_EXITED, E.VERIFIED, E.LAST_WORD]
    probe = [E.UPLOAD_BEGUN, E.INPUT_RECEIVED, E.METADATA_ONLY, E.LAST_WORD]
    cancelled = [E.INPUT_RECEIVED, E.PLANNED, E.CANCEL_REQUESTED, E.LAST_WORD]
    failed_while_cancelling = [E.CANCEL_REQUESTED, E.FAILED, E.LAST_WORD]
    for events in (completed, probe, cancelled, failed_while_cancelling):
        machine = JobStateMachine(1)
        for event in events:
            machine.process(event)
        assert machine.state is S.DONE


@pytest.mark.parametrize("state", [S.VERIFYING, S.DELIVERING, S.FAILING, S.DONE])
def test_cancel_comes_too_late_once_the_outcome_is_fixed(state: JobState) -> None:
    with pytest.raises(InvalidTransition):
        machine_in(state).process(E.CANCEL_REQUESTED)
