"""The token bucket that paces a connection's reader, on a clock of plain numbers."""

from __future__ import annotations

import pytest

from ffserve.wire.pacing import TokenBucket


def test_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        assert bucket.delay(0.0) == 0
        bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(0.1)
    assert bucket.delay(0.05) == pytest.approx(0.05)
    assert bucket.delay(0.1) == 0
    bucket.take(0.1)
    assert bucket.delay(0.1) == pytest.approx(0.1)


def test_idle_time_refills_no_more_than_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=5)
    bucket.take(0.0)
    taken = 0
    while bucket.delay(1000.0) == 0:
        bucket.take(1000.0)
        taken += 1
    assert taken == 5


def test_taking_past_empty_is_paid_back_in_waiting() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    bucket.take(0.0)
    bucket.take(0.0)  # one in debt
    assert bucket.delay(0.0) == pytest.approx(0.2)
