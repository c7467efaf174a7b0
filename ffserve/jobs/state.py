"""Job states and the one table of allowed transitions (as h11's `_state.py` does it)."""

from __future__ import annotations

import enum


class JobState(enum.Enum):
    RECEIVING = "receiving"  # waiting for uploads or fetching the URL
    QUEUED = "queued"  # input complete, waiting for a worker slot
    RUNNING = "running"  # FFmpeg is running
    DELIVERING = "delivering"  # sending results
    DONE = "done"  # completed, failed or cancelled: terminal


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.RECEIVING: frozenset({JobState.QUEUED, JobState.DONE}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.DELIVERING, JobState.DONE}),
    JobState.RUNNING: frozenset({JobState.DELIVERING, JobState.DONE}),
    JobState.DELIVERING: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


def check_transition(current: JobState, new: JobState) -> JobState:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"job cannot go from {current.value} to {new.value}")
    return new
