"""Quotas: each client's limits from its token's claims or the defaults; refusals name
the quota; usage is given back, and forgotten once a client holds nothing."""

from __future__ import annotations

from typing import Any

import pytest

from ffserve.config import QuotasConfig
from ffserve.errors import AdmissionError, ErrorCode
from ffserve.jobs.quota import HOUR_S, Quota, Quotas

DEFAULTS = QuotasConfig(concurrent_jobs=4, queued_jobs=2, connections=2)


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(AdmissionError) as error:
        call(*args)
    assert error.value.code == ErrorCode.QUOTA_EXCEEDED and error.value.details is not None
    quota: str = error.value.details["quota"]
    return quota


def test_claims_override_the_defaults_and_bad_values_do_not_unlimit() -> None:
    claims = {"quota": {"concurrent_jobs": 9, "input_mb": 1, "operations": ["thumbnail"]}}
    quota = Quota.of(DEFAULTS, claims)
    assert (quota.concurrent_jobs, quota.queued_jobs, quota.input_bytes) == (9, 2, 1 << 20)
    assert quota.operations == {"thumbnail"}
    bad = {"quota": {"concurrent_jobs": -1, "queued_jobs": "9", "connections": True,
                     "operations": "thumbnail"}}  # fmt: skip
    assert Quota.of(DEFAULTS, bad) == Quota.of(DEFAULTS, {})
    assert Quota.of(DEFAULTS, {"quota": "everything"}) == Quota.of(DEFAULTS, {})


def test_each_quota_refuses_by_name() -> None:
    quotas, now = Quotas(), [0.0]
    quota = Quota.of(DEFAULTS, {"quota": {"input_mb": 1, "operations": ["thumbnail", "trim"],
                                          "ffmpeg_s_per_hour": 60}})  # fmt: skip
    start = quotas.start_job
    assert refused(start, "c", quota, "gif", 0, lambda: now[0]) == "operations"
    assert refused(start, "c", quota, "trim", 2 << 20, lambda: now[0]) == "input_mb"
    start("c", quota, "trim", 0, lambda: now[0])
    start("c", quota, "trim", 0, lambda: now[0])
    assert refused(start, "c", quota, "trim", 0, lambda: now[0]) == "queued_jobs"
    quotas.input_done("c")
    quotas.input_done("c")
    start("c", quota, "trim", 0, lambda: now[0])
    start("c", quota, "trim", 0, lambda: now[0])
    assert refused(start, "c", quota, "trim", 0, lambda: now[0]) == "concurrent_jobs"
    start("other", quota, "trim", 0, lambda: now[0])  # another client is not held up
    for receiving in (False, False, True, True):
        quotas.end_job("c", receiving=receiving)
    quotas.ran("c", 60, now[0])
    assert refused(start, "c", quota, "trim", 0, lambda: now[0]) == "ffmpeg_s_per_hour"
    now[0] = HOUR_S + 1  # an hour later the time is back
    start("c", quota, "trim", 0, lambda: now[0])


def test_connections_are_counted_and_clients_forgotten() -> None:
    quotas, quota = Quotas(), Quota.of(DEFAULTS, {})
    quotas.connect("c", quota, 0.0)
    quotas.connect("c", quota, 0.0)
    assert refused(quotas.connect, "c", quota, 0.0) == "connections"
    quotas.disconnect("c")
    quotas.disconnect("c")
    assert quotas._usage == {}  # nothing held: nothing kept


def test_stale_clients_are_pruned() -> None:
    quotas, quota = Quotas(), Quota.of(DEFAULTS, {})
    for n in range(2000):
        quotas.ran(n, 1.0, 0.0)  # a run each, then gone
    quotas.connect("new", quota, HOUR_S + 1)
    assert list(quotas._usage) == ["new"]


def test_an_infinite_quota_in_a_token_is_the_default() -> None:
    """JSON allows Infinity, and PyJWT reads it: int(inf) must not drop the connection."""
    quota = Quota.of(
        DEFAULTS, {"quota": {"concurrent_jobs": float("inf"), "input_mb": float("nan")}}
    )
    assert quota == Quota.of(DEFAULTS, {})
